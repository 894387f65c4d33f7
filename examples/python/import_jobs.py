#!/usr/bin/env python3
"""Stream a JSON-lines file of jobs into bi-data's ImportJobs.

Each line is one `bi.data.v1.Job` in proto JSON form, e.g.
  {"title": "Data Engineer", "companyName": "Initech", "jobUrl": "https://..."}

Usage:
  import_jobs.py --addr 127.0.0.1:50051 --token "$TOKEN" jobs.jsonl [--source-site NAME]

Prints the resulting IngestRun as JSON (progress on stderr). Needs the
bi_data_client package (README, "Python client").
"""
import argparse
import json
import os
import sys

try:
    from bi_data_client import Client
except ImportError:
    sys.exit("bi_data_client is not installed: scripts/build-python-client.sh DIR, then pip install DIR/*.whl")
from google.protobuf import json_format


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--addr", default="127.0.0.1:50051")
    p.add_argument("--token", default=os.environ.get("TOKEN", ""))
    p.add_argument("--source-site", default="")
    args = p.parse_args()
    with Client(args.addr, args.token) as client:
        run = client.import_jobs(args.file, source_site=args.source_site,
                                 progress=lambda n: print(f"{n} rows sent", file=sys.stderr))
    print(json.dumps(json_format.MessageToDict(run), indent=2))


if __name__ == "__main__":
    main()
