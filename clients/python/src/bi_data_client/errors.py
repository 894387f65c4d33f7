"""BiDataError: a gRPC error with its google.rpc details decoded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One google.rpc.BadRequest field violation."""

    field: str
    description: str


class BiDataError(grpc.RpcError):
    """A failed call: status code and message, plus what the server put in
    the `grpc-status-details-bin` trailer (google.rpc.ErrorInfo, BadRequest).

    `code()` and `details()` are methods as on every grpc.RpcError (so code
    written against plain grpc keeps working); `message`, `reason`, `domain`,
    `metadata` and `field_violations` are attributes.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "", domain: str = "",
                 metadata: Optional[Mapping[str, str]] = None, field_violations: Sequence[FieldViolation] = (),
                 trailers: Sequence[Tuple[str, Any]] = ()) -> None:
        self._code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations: Tuple[FieldViolation, ...] = tuple(field_violations)
        self._trailers = tuple(trailers)
        super().__init__(str(self))

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self._code.name}: {self.message}{reason}"

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.message

    def trailing_metadata(self) -> Tuple[Tuple[str, Any], ...]:
        return self._trailers

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "BiDataError":
        if isinstance(err, BiDataError):
            return err
        code = _call(err, "code") or grpc.StatusCode.UNKNOWN
        message = _call(err, "details") or ""
        trailers = tuple(_call(err, "trailing_metadata") or ())
        info = error_details_pb2.ErrorInfo()
        violations: List[FieldViolation] = []
        status = _status(trailers)
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        return cls(code, message, reason=info.reason, domain=info.domain, metadata=dict(info.metadata),
                   field_violations=violations, trailers=trailers)


def _call(err: Any, name: str) -> Any:
    fn = getattr(err, name, None)
    return fn() if callable(fn) else None


def _status(trailers: Sequence[Tuple[str, Any]]) -> Optional[status_pb2.Status]:
    for key, value in trailers:
        if key == DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None
