#!/usr/bin/env python3
"""Stream a JSON-lines file of jobs into bi-data's ImportJobs.

Each line is one `bi.data.v1.Job` in proto JSON form, e.g.
  {"title": "Data Engineer", "companyName": "Initech", "jobUrl": "https://..."}

Usage:
  import_jobs.py --addr 127.0.0.1:50051 --token "$TOKEN" jobs.jsonl [--source-site NAME]

Prints the resulting IngestRun as JSON. Stubs are generated on the fly from
proto/ with grpcio-tools (pip install grpcio grpcio-tools).
"""
import argparse
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format


def load_stubs():
    import grpc_tools
    from grpc_tools import protoc

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = tempfile.mkdtemp(prefix="bi_data_stubs_")
    rc = protoc.main(["", f"-I{root}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "bi/data/v1/job.proto"])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    from bi.data.v1 import job_pb2, job_pb2_grpc  # noqa: E402
    return job_pb2, job_pb2_grpc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--addr", default="127.0.0.1:50051")
    p.add_argument("--token", default=os.environ.get("TOKEN", ""))
    p.add_argument("--source-site", default="")
    args = p.parse_args()
    job_pb2, job_pb2_grpc = load_stubs()

    def rows():
        with open(args.file, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield json_format.Parse(line, job_pb2.Job())

    metadata = [("authorization", f"Bearer {args.token}")]
    if args.source_site:
        metadata.append(("x-source-site", args.source_site))
    with grpc.insecure_channel(args.addr) as channel:
        stub = job_pb2_grpc.JobServiceStub(channel)
        resp = stub.ImportJobs(rows(), metadata=metadata, timeout=600)
    print(json.dumps(json_format.MessageToDict(resp.ingest_run), indent=2))


if __name__ == "__main__":
    main()
