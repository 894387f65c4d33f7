"""Page iteration for every List/Search method (AIP-158)."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, TypeVar

from google.protobuf.message import Message

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def pages(method: Callable[..., Resp], request: Req, **call_kwargs: Any) -> Iterator[Resp]:
    """Every response page of `method(request)`, following next_page_token.

    The request (filter, order_by, page_size, ...) is copied and sent again
    with each token, so the tokens stay bound to what they were issued for.
    `call_kwargs` (timeout, metadata, ...) go with every call.
    """
    req = type(request)()
    req.CopyFrom(request)
    seen = set()
    while True:
        page = method(req, **call_kwargs)
        yield page
        token = getattr(page, "next_page_token")
        if not token:
            return
        if token in seen:
            raise RuntimeError(f"{type(page).__name__}: the server repeated page token {token!r}")
        seen.add(token)
        req.page_token = token


def iterate(method: Callable[..., Resp], request: Req, *, field: Optional[str] = None,
            **call_kwargs: Any) -> Iterator[Any]:
    """Every item of every page: the response's repeated message field
    (`jobs`, `companies`, ...), or `field` when given."""
    for page in pages(method, request, **call_kwargs):
        yield from getattr(page, field or items_field(page))


def items_field(page: Message) -> str:
    """The name of the first repeated message field of a response."""
    for f in page.DESCRIPTOR.fields:
        repeated = getattr(f, "is_repeated", None)
        if repeated is None:
            repeated = f.label == f.LABEL_REPEATED
        if repeated and f.message_type is not None and not f.message_type.GetOptions().map_entry:
            return f.name
    raise TypeError(f"{page.DESCRIPTOR.full_name} has no repeated message field to iterate")
