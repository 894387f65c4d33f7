"""Streaming jobs into JobService.ImportJobs."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from google.protobuf import json_format

from bi.data.v1 import job_pb2

Row = Union[Mapping[str, Any], job_pb2.Job]
Source = Union[Iterable[Row], str, "os.PathLike[str]"]


def read_jsonl(path: Union[str, "os.PathLike[str]"]) -> Iterator[Mapping[str, Any]]:
    """The JSON objects of a JSON-lines file, one per non-blank line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: not JSON: {e}") from None


def to_job(row: Row, index: int = 0) -> job_pb2.Job:
    """A Job from a Job or from its proto JSON form (`jobUrl` or `job_url`)."""
    if isinstance(row, job_pb2.Job):
        return row
    try:
        return json_format.ParseDict(row, job_pb2.Job())
    except (json_format.ParseError, TypeError) as e:
        raise ValueError(f"row {index}: not a bi.data.v1.Job: {e}") from None


def import_jobs(stub: Any, rows: Source, *, source_site: str = "",
                progress: Optional[Callable[[int], None]] = None, progress_every: int = 1000,
                timeout: Optional[float] = 600.0, metadata: Sequence[Tuple[str, str]] = ()) -> job_pb2.IngestRun:
    """Streams `rows` (Jobs, dicts, or the path of a JSON-lines file) into
    `stub.ImportJobs` and returns the recorded IngestRun.

    Rows the server rejects are counted in `failed` and listed in `errors`
    (index, reason); they do not stop the rest. A row that is not a Job at
    all stops the stream and raises ValueError (rows sent before it may have
    been imported). progress(n) is called every `progress_every` rows sent
    and once at the end. Never retried: the rows are consumed as they go.
    """
    source: Iterable[Row] = read_jsonl(rows) if isinstance(rows, (str, os.PathLike)) else rows
    sent = 0
    failure: List[BaseException] = []

    def messages() -> Iterator[job_pb2.Job]:
        nonlocal sent
        try:
            for row in source:
                job = to_job(row, sent)
                yield job
                sent += 1
                if progress and sent % progress_every == 0:
                    progress(sent)
        except Exception as e:
            failure.append(e)
            raise

    md = list(metadata) + ([("x-source-site", source_site)] if source_site else [])
    try:
        resp = stub.ImportJobs(messages(), metadata=md, timeout=timeout)
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    if progress and sent % progress_every:
        progress(sent)
    return resp.ingest_run
