"""Small helpers that answer a request with a complete body and honest headers."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from athens.web.caching import NO_STORE

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
ZIP = b"application/zip"


def body(request: IRequest, content_type: bytes, data: bytes, code: int = 200) -> bytes:
    """Set status, type and Content-Length; the caller returns the bytes to Klein.  Errors are kept by no cache."""
    request.setResponseCode(code)
    if code >= 300:
        request.setHeader(b"cache-control", NO_STORE)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(data))
    return data


def text(request: IRequest, message: str, code: int = 200) -> bytes:
    """A one-line ``text/plain`` answer, which the go command prints to its user."""
    line = " ".join(message.split())  # never more than one line, whatever a path contained
    return body(request, TEXT, line.encode("utf-8", "replace") + b"\n", code)


def abort(request: IRequest, why: str) -> None:
    """Break off an answer whose headers went out: the client must see a broken transfer, never a whole one."""
    cut = getattr(request, "abort", None)  # TimedRequest's; other requests (tests' fakes) just lose the connection
    if cut is not None:
        cut(why)
    else:
        request.loseConnection()
