"""bi-data's Python client.

The generated stubs are the `bi.data.v1` package (`job_pb2`,
`job_pb2_grpc`, ...), re-exported here; this package adds the channel
factory (token, deadline, retries), page iteration, the import helper and
BiDataError with the google.rpc details.

    from bi_data_client import Client, job_pb2
    with Client("127.0.0.1:50051", token) as c:
        job = c.jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(title="T", company_name="C")))
        for j in c.iterate(c.jobs.ListJobs, job_pb2.ListJobsRequest(filter="remote = true")):
            print(j.id, j.title)
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import grpc

from bi.data.v1 import (analytics_pb2, analytics_pb2_grpc, audit_pb2, audit_pb2_grpc, company_pb2,
                        company_pb2_grpc, job_pb2, job_pb2_grpc, outreach_pb2, outreach_pb2_grpc)

from .channel import NO_RETRY, CallPolicy, RetryPolicy, connect, is_read
from .errors import BiDataError, FieldViolation
from .imports import Source, import_jobs, read_jsonl, to_job
from .pages import items_field, iterate, pages

__all__ = [
    "BiDataError", "CallPolicy", "Client", "FieldViolation", "NO_RETRY", "RetryPolicy", "analytics_pb2",
    "analytics_pb2_grpc", "audit_pb2", "audit_pb2_grpc", "company_pb2", "company_pb2_grpc", "connect",
    "import_jobs", "is_read", "items_field", "iterate", "job_pb2", "job_pb2_grpc", "outreach_pb2",
    "outreach_pb2_grpc", "pages", "read_jsonl", "to_job",
]


class Client:
    """One channel (see `connect`) and a stub per service."""

    def __init__(self, target: str, token: Optional[str] = None, **connect_kwargs: Any) -> None:
        self.channel: grpc.Channel = connect(target, token, **connect_kwargs)
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)
        self.companies = company_pb2_grpc.CompanyServiceStub(self.channel)
        self.outreach = outreach_pb2_grpc.OutreachServiceStub(self.channel)
        self.analytics = analytics_pb2_grpc.AnalyticsServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    def iterate(self, method: Callable[..., Any], request: Any, **kwargs: Any) -> Iterator[Any]:
        """Every item of every page of a List/Search method (see `iterate`)."""
        return iterate(method, request, **kwargs)

    def import_jobs(self, rows: Source, **kwargs: Any) -> job_pb2.IngestRun:
        """JobService.ImportJobs from rows or a JSON-lines file (see `import_jobs`)."""
        return import_jobs(self.jobs, rows, **kwargs)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
