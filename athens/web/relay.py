"""
Pass an upstream's answer through to the client, streaming, storing nothing.

For ``passthrough`` modules (an operator must not cache them).  The body is
relayed as it arrives with backpressure both ways: the client's transport
pauses the upstream read.  Upstream statuses map as for fills: 200 passes,
404/410 pass as not found, anything else is a 502.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IRequest

from athens.fetch.egress import via
from athens.fetch.interface import OriginError, OriginNotFound
from athens.web.responses import abort


class _Relay(Protocol):
    def __init__(self, request: IRequest) -> None:
        self.request = request
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        # The client's slowness pauses the upstream transport: memory stays flat.
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.request.write(data)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        if not getattr(self.request, "_disconnected", False) and not self.request.finished:
            self.request.unregisterProducer()
        if reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(OriginError(f"the upstream broke off: {reason.getErrorMessage()}"))


async def relay(request: IRequest, url: str, pool: Any, reactor: Any, timeout: float = 60.0) -> bytes | None:
    try:
        response = await treq.request(request.method.decode(), url, **via(pool), timeout=timeout, unbuffered=True,
                                      reactor=reactor, headers={"User-Agent": "athens-py"})
    except Exception as e:
        raise OriginError(f"cannot reach the upstream: {e}") from None
    if response.code in (404, 410):
        raise OriginNotFound(f"the upstream answered {response.code}")
    if response.code != 200:
        raise OriginError(f"the upstream answered {response.code}")
    for name in (b"content-type", b"content-length"):
        value = response.headers.getRawHeaders(name)
        if value:
            request.setHeader(name, value[0])
    if request.method == b"HEAD":
        return None
    protocol = _Relay(request)
    response.deliverBody(protocol)
    try:
        await protocol.done
    except OriginError as e:
        abort(request, str(e))  # never a short body under a 200
    return None

