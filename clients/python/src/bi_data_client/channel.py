"""The channel factory: bearer token, default deadline, retries, errors.

All of it is one client interceptor (`CallPolicy`) over a plain grpc
channel, so every generated stub used on the channel gets it.
"""
from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, Iterator, Optional, Sequence, Tuple, Union

import grpc

from .errors import BiDataError

# Methods that read only: safe to send again whatever happened to the first
# attempt. Writes are retried only when their request carries a request_id
# (the server then replays the first result instead of applying it twice).
READ_PREFIXES = ("Get", "List", "Search", "BatchGet", "Export", "Aggregate", "Generate")


def is_read(method: str) -> bool:
    """Whether `/pkg.Service/Method` only reads."""
    return method.rsplit("/", 1)[-1].startswith(READ_PREFIXES)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for retryable failures."""

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    codes: FrozenSet[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)


NO_RETRY = RetryPolicy(max_attempts=1)


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                   "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class CallPolicy(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>`, a default deadline (one deadline
    for all attempts of a call), retries, and raises BiDataError.

    Retried (on `retry.codes`): unary reads, server-streaming reads that
    failed before their first message, and writes whose request has a
    non-empty `request_id`. Never retried: other writes, client streams
    (ImportJobs: the request iterator is consumed), and ABORTED with reason
    ETAG_MISMATCH (the same request fails the same way; read again first).
    Calls made with `.future()` pass through unchanged.
    """

    def __init__(self, token: Optional[str] = None, timeout: Optional[float] = 30.0,
                 retry: RetryPolicy = RetryPolicy()) -> None:
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retry = retry

    def _deadline(self, details: grpc.ClientCallDetails) -> Optional[float]:
        timeout = details.timeout if details.timeout is not None else self._timeout
        return None if timeout is None else time.monotonic() + timeout

    def _details(self, details: grpc.ClientCallDetails, deadline: Optional[float]) -> _Details:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        return _Details(details.method, timeout, tuple(details.metadata or ()) + self._auth, details.credentials,
                        details.wait_for_ready, details.compression)

    def _retryable(self, method: str, request: Any) -> bool:
        return is_read(method) or bool(getattr(request, "request_id", ""))

    def _wait_before_retry(self, err: grpc.RpcError, attempt: int, deadline: Optional[float]) -> bool:
        """Sleeps and returns True when `err` on attempt `attempt` is worth another try."""
        if attempt >= self._retry.max_attempts or err.code() not in self._retry.codes:
            return False
        if BiDataError.from_rpc_error(err).reason == "ETAG_MISMATCH":
            return False
        pause = self._retry.backoff(attempt)
        if deadline is not None and time.monotonic() + pause >= deadline:
            return False
        time.sleep(pause)
        return True

    def intercept_unary_unary(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        retry = self._retryable(details.method, request)
        deadline = self._deadline(details)
        attempt = 1
        while True:
            outcome = continuation(self._details(details, deadline), request)
            err = _failure(outcome)
            if err is None:
                return outcome
            if not (retry and self._wait_before_retry(err, attempt, deadline)):
                raise BiDataError.from_rpc_error(err) from None
            attempt += 1

    def intercept_unary_stream(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        deadline = self._deadline(details)
        return _Stream(lambda: continuation(self._details(details, deadline), request),
                       self._retryable(details.method, request), self, deadline)

    def intercept_stream_unary(self, continuation: Callable, details: grpc.ClientCallDetails,
                               request_iterator: Iterator[Any]) -> Any:
        outcome = continuation(self._details(details, self._deadline(details)), request_iterator)
        err = _failure(outcome)
        if err is not None:
            raise BiDataError.from_rpc_error(err) from None
        return outcome

    def intercept_stream_stream(self, continuation: Callable, details: grpc.ClientCallDetails,
                                request_iterator: Iterator[Any]) -> Any:
        return _Stream(lambda: continuation(self._details(details, self._deadline(details)), request_iterator),
                       False, self, None)


def _failure(outcome: Any) -> Optional[grpc.RpcError]:
    """The error of a finished call; None for a success, or for a call still
    running (`.future()`: those pass through, neither retried nor converted)."""
    if not isinstance(outcome, grpc.RpcError):
        return None
    if isinstance(outcome, grpc.Future) and not outcome.done():
        return None
    return outcome if outcome.code() != grpc.StatusCode.OK else None


class _Stream:
    """A server stream that restarts when it fails before its first message
    (if the call may be retried) and raises BiDataError. Other attributes
    (cancel, trailing_metadata, ...) are the current attempt's."""

    def __init__(self, start: Callable[[], Any], retry: bool, policy: CallPolicy, deadline: Optional[float]) -> None:
        self._start, self._retry, self._policy, self._deadline = start, retry, policy, deadline
        self._call = start()
        self._attempt = 1
        self._received = False

    def __iter__(self) -> "_Stream":
        return self

    def __next__(self) -> Any:
        while True:
            try:
                item = next(self._call)
                self._received = True
                return item
            except grpc.RpcError as err:
                if self._received or not (self._retry and self._policy._wait_before_retry(err, self._attempt,
                                                                                            self._deadline)):
                    raise BiDataError.from_rpc_error(err) from None
                self._attempt += 1
                self._call = self._start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


Credentials = Union[bool, grpc.ChannelCredentials]


def connect(target: str, token: Optional[str] = None, *, timeout: Optional[float] = 30.0,
            tls: Credentials = False, retry: RetryPolicy = RetryPolicy(),
            interceptors: Sequence[Any] = (), options: Sequence[Tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to bi-data at `target` ("host:port").

    token: the bearer token sent with every call (none for health/reflection).
    timeout: default deadline in seconds of a call that sets none (None: no
    deadline). tls: False for plaintext, True for TLS with the system roots,
    or grpc.ChannelCredentials. retry: RetryPolicy (NO_RETRY turns it off).
    interceptors: more client interceptors, run inside the policy (closer to
    the wire, so each attempt passes through them).
    """
    if tls is True:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=list(options))
    elif tls:
        channel = grpc.secure_channel(target, tls, options=list(options))
    else:
        channel = grpc.insecure_channel(target, options=list(options))
    return grpc.intercept_channel(channel, CallPolicy(token, timeout, retry), *interceptors)
