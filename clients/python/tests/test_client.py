"""bi_data_client against a live server (tests/it/python_client.rs starts
one and runs this with BI_DATA_ADDR and BI_DATA_TOKEN, a writer of a fresh
tenant):

    python -m unittest discover -s clients/python/tests -v
"""
import json
import os
import tempfile
import unittest
import uuid

import grpc
from google.protobuf import field_mask_pb2

from bi_data_client import BiDataError, Client, RetryPolicy, iterate, job_pb2, pages

ADDR = os.environ.get("BI_DATA_ADDR", "127.0.0.1:50051")
TOKEN = os.environ.get("BI_DATA_TOKEN", "")
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


class Injected(grpc.RpcError):
    """A failure made up on the client side, as a dropped connection would."""

    def __init__(self, code):
        super().__init__(code.name)
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "injected by the test"

    def trailing_metadata(self):
        return ()


class LoseFirstResponse(grpc.UnaryUnaryClientInterceptor):
    """Sends every attempt to the server, then replaces the first one's
    answer with UNAVAILABLE: the write happened, the caller did not hear."""

    def __init__(self):
        self.attempts = 0

    def intercept_unary_unary(self, continuation, details, request):
        self.attempts += 1
        outcome = continuation(details, request)
        if self.attempts == 1:
            outcome.result()  # the server answered (raises if it refused)
            raise Injected(grpc.StatusCode.UNAVAILABLE)
        return outcome


class Counting(grpc.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.attempts = 0

    def intercept_unary_unary(self, continuation, details, request):
        self.attempts += 1
        return continuation(details, request)


def new_job(run, n=0, **fields):
    fields.setdefault("job_url", f"https://py-client.test/{run}/{n}")
    return job_pb2.Job(title=f"Py client {run} {n:03}", company_name="Snake Co", keywords=[run], **fields)


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.run_id = "r" + uuid.uuid4().hex[:10]
        self.client = Client(ADDR, TOKEN, timeout=30, retry=FAST)
        self.jobs = self.client.jobs

    def tearDown(self):
        self.client.close()

    def count(self, flt):
        resp = self.jobs.ListJobs(job_pb2.ListJobsRequest(filter=flt, count=True))
        return resp.total_size

    def test_create_get_update_with_a_field_mask(self):
        job = self.jobs.CreateJob(job_pb2.CreateJobRequest(
            job=new_job(self.run_id, location="Berlin", salary_min=90000, salary_max=120000, remote=True),
            request_id=f"create-{self.run_id}"))
        self.assertTrue(uuid.UUID(job.id) and job.etag)
        got = self.jobs.GetJob(job_pb2.GetJobRequest(id=job.id))
        self.assertEqual(got, job)

        changed = self.jobs.UpdateJob(job_pb2.UpdateJobRequest(
            job=job_pb2.Job(id=job.id, title="Staff Rust Engineer", job_type=job_pb2.JOB_TYPE_CONTRACT,
                            location="ignored: not in the mask"),
            update_mask=field_mask_pb2.FieldMask(paths=["title", "job_type"])))
        self.assertEqual((changed.title, changed.job_type), ("Staff Rust Engineer", job_pb2.JOB_TYPE_CONTRACT))
        self.assertEqual((changed.location, changed.salary_max, changed.remote), ("Berlin", 120000, True))
        self.assertNotEqual(changed.etag, job.etag)

        # A stale etag: ABORTED / ETAG_MISMATCH, and not retried although
        # ABORTED is retryable (the same request would fail the same way).
        counting = Counting()
        with Client(ADDR, TOKEN, retry=FAST, interceptors=[counting]) as c:
            with self.assertRaises(BiDataError) as cm:
                c.jobs.UpdateJob(job_pb2.UpdateJobRequest(
                    job=job_pb2.Job(id=job.id, title="Late", etag=job.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]), request_id=f"late-{self.run_id}"))
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.ABORTED)
        self.assertEqual((err.reason, err.domain), ("ETAG_MISMATCH", "bi.data.v1"))
        self.assertEqual(counting.attempts, 1)
        self.assertEqual(self.jobs.GetJob(job_pb2.GetJobRequest(id=job.id)).title, "Staff Rust Engineer")

    def test_errors_carry_reason_and_field_violations(self):
        first = self.jobs.CreateJob(job_pb2.CreateJobRequest(job=new_job(self.run_id)))
        with self.assertRaises(grpc.RpcError) as cm:  # still a grpc.RpcError for plain-grpc callers
            self.jobs.CreateJob(job_pb2.CreateJobRequest(job=new_job(self.run_id)))
        err = cm.exception
        self.assertIsInstance(err, BiDataError)
        self.assertEqual(err.code(), grpc.StatusCode.ALREADY_EXISTS)
        self.assertEqual(err.reason, "DUPLICATE_JOB_URL")
        self.assertEqual(err.domain, "bi.data.v1")
        self.assertTrue(first.id and err.message)

        with self.assertRaises(BiDataError) as cm:
            self.jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
                company_name="Snake Co", salary_min=200, salary_max=100)))
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual({v.field for v in err.field_violations}, {"job.title", "job.salary_min"})
        self.assertTrue(all(v.description for v in err.field_violations), err.field_violations)

        with self.assertRaises(BiDataError) as cm:
            self.jobs.GetJob(job_pb2.GetJobRequest(id=str(uuid.uuid4())))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_page_iterator_follows_tokens_with_the_same_filter_and_order(self):
        n = 23
        made = self.jobs.BatchCreateJobs(job_pb2.BatchCreateJobsRequest(
            requests=[job_pb2.CreateJobRequest(job=new_job(self.run_id, i)) for i in range(n)]))
        want = [j.id for j in made.jobs]
        req = job_pb2.ListJobsRequest(filter=f'keywords:"{self.run_id}"', order_by="title desc", page_size=5)

        sizes = [len(p.jobs) for p in pages(self.jobs.ListJobs, req)]
        self.assertEqual(sizes, [5, 5, 5, 5, 3])
        listed = list(iterate(self.jobs.ListJobs, req))
        ids = [j.id for j in listed]
        self.assertEqual(len(ids), n)
        self.assertEqual(len(set(ids)), n, "a job came twice")
        self.assertEqual(set(ids), set(want))
        titles = [j.title for j in listed]
        self.assertEqual(titles, sorted(titles, reverse=True))
        self.assertEqual(req.page_token, "", "the caller's request was changed")

        # The same iterator over another method and message: SearchJobs.
        hits = list(self.client.iterate(self.jobs.SearchJobs,
                                        job_pb2.SearchJobsRequest(query=self.run_id, page_size=4)))
        self.assertEqual(sorted(j.id for j in hits), sorted(want))

    def test_export_streams_and_raises_bidataerror(self):
        made = self.jobs.BatchCreateJobs(job_pb2.BatchCreateJobsRequest(
            requests=[job_pb2.CreateJobRequest(job=new_job(self.run_id, i)) for i in range(3)]))
        exported = self.jobs.ExportJobs(job_pb2.ExportJobsRequest(filter=f'keywords:"{self.run_id}"'))
        self.assertEqual(sorted(j.id for j in exported), sorted(j.id for j in made.jobs))
        with self.assertRaises(BiDataError) as cm:
            list(self.jobs.ExportJobs(job_pb2.ExportJobsRequest(filter="no_such_field = 1")))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_a_request_id_write_is_retried_and_applied_once(self):
        lose = LoseFirstResponse()
        with Client(ADDR, TOKEN, retry=FAST, interceptors=[lose]) as c:
            job = c.jobs.CreateJob(job_pb2.CreateJobRequest(job=new_job(self.run_id),
                                                            request_id=f"retry-{self.run_id}"))
        self.assertEqual(lose.attempts, 2)
        listed = self.jobs.ListJobs(job_pb2.ListJobsRequest(filter=f'keywords:"{self.run_id}"')).jobs
        self.assertEqual([j.id for j in listed], [job.id])

    def test_a_write_without_request_id_is_not_retried(self):
        lose = LoseFirstResponse()
        with Client(ADDR, TOKEN, retry=FAST, interceptors=[lose]) as c:
            with self.assertRaises(BiDataError) as cm:
                c.jobs.CreateJob(job_pb2.CreateJobRequest(job=new_job(self.run_id)))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(lose.attempts, 1)
        self.assertEqual(self.count(f'keywords:"{self.run_id}"'), 1)  # it did happen, once

    def test_a_read_is_retried(self):
        job = self.jobs.CreateJob(job_pb2.CreateJobRequest(job=new_job(self.run_id)))
        lose = LoseFirstResponse()
        with Client(ADDR, TOKEN, retry=FAST, interceptors=[lose]) as c:
            self.assertEqual(c.jobs.GetJob(job_pb2.GetJobRequest(id=job.id)).id, job.id)
        self.assertEqual(lose.attempts, 2)

    def test_import_from_a_jsonl_file_with_progress(self):
        rows = [{"title": f"Import {i}", "companyName": "Snake Co", "jobUrl": f"https://py-client.test/{self.run_id}/{i}",
                 "keywords": [self.run_id], "attributes": {"n": i}} for i in range(250)]
        rows[7] = {"companyName": "No Title Inc", "keywords": [self.run_id]}
        seen = []
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "jobs.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
            run = self.client.import_jobs(path, source_site=self.run_id, progress=seen.append, progress_every=100)
        self.assertEqual(seen, [100, 200, 250])
        self.assertEqual((run.received, run.inserted, run.updated, run.failed), (250, 249, 0, 1))
        self.assertEqual(run.source_site, self.run_id)
        self.assertEqual([e.index for e in run.errors], [7])
        self.assertTrue(run.errors[0].reason)
        self.assertEqual(self.count(f'keywords:"{self.run_id}"'), 249)

        # Again from an iterable of dicts and Job messages: the same URLs match;
        # the identical row is unchanged, the other one updates.
        again = self.client.import_jobs([rows[0], new_job(self.run_id, 1, job_url=rows[1]["jobUrl"])])
        self.assertEqual((again.received, again.inserted, again.updated, again.unchanged, again.failed),
                         (2, 0, 1, 1, 0))

    def test_import_stops_on_a_row_that_is_no_job(self):
        with self.assertRaisesRegex(ValueError, "row 1: not a bi.data.v1.Job"):
            self.client.import_jobs([{"title": "ok", "companyName": "C"}, {"no_such_field": 1}])


if __name__ == "__main__":
    unittest.main()
