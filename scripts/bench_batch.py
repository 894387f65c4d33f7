"""BatchCreateJobs from a Python (grpcio) client: 1,000 jobs per call,
sequential calls, rows/s; and, as the baseline in the same run, the same
number of rows streamed through ImportJobs by the same client. Run by
scripts/bench-batch.sh, which starts the server."""

import argparse
import os
import random
import sys
import tempfile
import time
import uuid

WORDS = ("data platform pipeline python rust kubernetes sql analytics backend service "
         "reliability on-call team product customers latency cost observability").split()
TITLES = ["Senior", "Staff", "Junior", "Lead", ""]
TECH = ["Rust", "Python", "Data", "Platform", "Backend", "SQL"]
ROLE = ["Engineer", "Analyst", "Developer", "Architect"]


def stubs():
    import grpc_tools
    from grpc_tools import protoc

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = tempfile.mkdtemp(prefix="bi_batch_bench_")
    rc = protoc.main(["", f"-I{root}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "bi/data/v1/job.proto"])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    from bi.data.v1 import job_pb2, job_pb2_grpc  # noqa: E402
    return job_pb2, job_pb2_grpc


def job(pb, rnd, run, i):
    title = " ".join(w for w in (rnd.choice(TITLES), rnd.choice(TECH), rnd.choice(ROLE)) if w)
    company = f"Company {rnd.randrange(5000)}"
    j = pb.Job(
        title=title,
        company_name=company,
        location=rnd.choice(["Berlin", "Remote", "London", "Paris"]),
        salary_min=50000 + rnd.randrange(100) * 1000,
        salary_currency="USD",
        description=f"{company} is hiring a {title}. You will work on "
        + " ".join(rnd.choice(WORDS) for _ in range(14)) + ".",
        job_url=f"https://jobs.example.com/{run}/{i}",
        source_site="bench",
        remote=rnd.random() < 0.5,
        keywords=sorted({rnd.choice(WORDS) for _ in range(3)}),
    )
    j.salary_max = j.salary_min + 10000
    j.attributes.update({"team_size": float(3 + rnd.randrange(20)), "visa_sponsorship": rnd.random() < 0.3})
    return j


def main():
    import grpc

    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--batch", type=int, default=1000)
    a = p.parse_args()
    pb, rpc = stubs()
    channel = grpc.insecure_channel(a.addr, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = rpc.JobServiceStub(channel)
    md = [("authorization", f"Bearer {a.token}")]
    rnd = random.Random(42)
    run = uuid.uuid4().hex[:8]
    n = a.calls * a.batch
    # Requests are built before the clock starts: what is measured is the call.
    batches = [pb.BatchCreateJobsRequest(requests=[pb.CreateJobRequest(job=job(pb, rnd, run, c * a.batch + i))
                                                   for i in range(a.batch)],
                                         request_id=str(uuid.uuid4()))
               for c in range(a.calls)]
    stub.BatchCreateJobs(pb.BatchCreateJobsRequest(requests=[pb.CreateJobRequest(job=job(pb, rnd, "warm", 0))]),
                         metadata=md, timeout=60)
    lat = []
    t0 = time.perf_counter()
    for b in batches:
        s = time.perf_counter()
        r = stub.BatchCreateJobs(b, metadata=md, timeout=120)
        lat.append(time.perf_counter() - s)
        assert len(r.jobs) == a.batch, len(r.jobs)
    took = time.perf_counter() - t0
    lat.sort()
    print(f"BatchCreateJobs from Python: {n} rows in {a.calls} calls of {a.batch}: {took:.2f} s = "
          f"{n / took:,.0f} rows/s (per call p50 {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms)")
    rows = [job(pb, rnd, run + "-import", i) for i in range(n)]
    t0 = time.perf_counter()
    r = stub.ImportJobs(iter(rows), metadata=md, timeout=600)
    took_i = time.perf_counter() - t0
    assert r.ingest_run.inserted == n, r.ingest_run
    print(f"ImportJobs from Python (baseline): {n} rows: {took_i:.2f} s = {n / took_i:,.0f} rows/s")
    print(f"ratio BatchCreateJobs / ImportJobs: {took_i / took:.2f}")


if __name__ == "__main__":
    main()
