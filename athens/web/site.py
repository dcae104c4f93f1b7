"""The twisted.web Site: an access log as structured events, no tracebacks to clients."""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

access = Logger(namespace="athens.access")


class TimedRequest(Request):
    """A request that knows when it arrived, for the access log."""

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.arrived = time.monotonic()
        super().requestReceived(command, path, version)


class ProxySite(Site):
    displayTracebacks = False
    noisy = False

    def __init__(self, resource: IResource, **kwargs: object) -> None:
        super().__init__(resource, requestFactory=TimedRequest, **kwargs)  # type: ignore[arg-type]

    def log(self, request: Request) -> None:
        arrived = getattr(request, "arrived", None)
        access.info(
            '{client} "{method} {uri}" {code} {size} {duration_ms}ms',
            client=request.getClientAddress().host if hasattr(request.getClientAddress(), "host") else "-",
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace"),
            code=request.code,
            size=request.sentLength,
            duration_ms=round((time.monotonic() - arrived) * 1000, 1) if arrived else None,
        )
