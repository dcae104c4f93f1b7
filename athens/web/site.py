"""
The twisted.web Site: request ids, drain on stop, an access line for every
request (whole, broken or abandoned), no tracebacks to clients, and the hit
path (:mod:`athens.web.hitpath`) in front of every plain connection.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from athens.logs import current_request_id
from athens.metrics import Metrics
from athens.web.accesslog import AccessLog, Line
from athens.web.admin import MAX_BODY as PREFETCH_MAX_BODY
from athens.web.admin import PATH as PREFETCH_PATH
from athens.web.hitpath import Channel, HitChannel, HitPath
from athens.web.requestid import request_id


class TimedRequest(Request):
    """
    A request that knows when it arrived (access log), that the site counts
    while it runs (drain), and that carries a request id: the client's
    ``X-Request-Id`` if it is sane, else a new one, echoed in the answer and
    put on every log line written while it is handled.
    """

    request_id = "-"
    #: The protocol takes GET and HEAD only: a body beyond this is refused before it is read.
    max_body = 64 << 10
    #: Why the answer broke off after its headers went out (logged); None while it is whole.
    broken: str | None = None
    #: For the access line, set by the protocol handlers: what was asked for, and hit or miss.
    module = ""
    module_version = ""
    cache = "-"

    def abort(self, why: str) -> None:
        """
        End an answer that cannot be completed: the connection is cut, so the
        client sees a broken transfer (never a chunked terminator or a short
        body under a 200), and the access log says why.
        """
        self.broken = why
        transport = self.channel.transport if self.channel is not None else None
        if transport is not None:
            transport.abortConnection()

    def process(self) -> None:
        site = self.channel.site if self.channel is not None else None
        tracing = site.tracing if isinstance(site, ProxySite) else None
        if tracing is None:
            self._process()
            return
        # The request's span is current while it is handled: coroutines started now keep it (Twisted copies the
        # context), so storage, fetches and upstream requests become its children.
        token = tracing.request_started(self)
        try:
            self._process()
        finally:
            tracing.request_handed_off(token)

    def _process(self) -> None:
        bad = _bad_input(self)
        if bad is not None:
            _refuse(self, bad)  # one access line says it all
            return
        super().process()

    def finish(self) -> None:
        if self.broken is not None:
            return  # nothing more goes out; connectionLost, which the abort brings, logs it
        super().finish()

    def connectionLost(self, reason: object) -> None:  # noqa: N802 - Twisted's name
        site = self.channel.site if self.channel is not None else None
        if not self.finished and isinstance(site, ProxySite) and hasattr(self, "arrived"):
            if self.broken is None:
                self.broken = "client left"
            site.log(self)  # an answer that never finished is logged too, with what really went out
        super().connectionLost(reason)

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        limit = self.max_body
        target = getattr(self.channel, "_path", b"").split(b"?", 1)[0]  # the request line is all there is yet
        if target.endswith(PREFETCH_PATH):
            limit = PREFETCH_MAX_BODY
        if length is not None and length > limit:
            transport = self.channel.transport if self.channel is not None else None
            if transport is not None:
                message = b"request body too large: this proxy reads none\n"
                transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(message), message))
                transport.loseConnection()
            return
        super().gotLength(length)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.arrived = time.monotonic()
        site = self.channel.site if self.channel is not None else None
        if isinstance(site, ProxySite):
            site.started(self)
        self.request_id = request_id(self.requestHeaders.getRawHeaders(b"x-request-id", [b""])[0])
        self.setHeader(b"x-request-id", self.request_id.encode())
        token = current_request_id.set(self.request_id)
        try:
            super().requestReceived(command, path, version)
        finally:
            current_request_id.reset(token)


def _refuse(request: Request, why: str) -> None:
    message = f"bad request: {why}\n".encode()
    request.setResponseCode(400)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(message))
    request.write(message)
    request.finish()


def _bad_input(request: Request) -> str | None:
    """What twisted.web would pass on but werkzeug cannot take (it would fail with a 500, or log a traceback)."""
    try:
        unquote_to_bytes(request.path).decode("utf-8")
    except UnicodeDecodeError:
        return "the path is not UTF-8"
    host = request.getHeader(b"host")
    if host is not None:
        try:
            name = host.decode("ascii")
            if not name.startswith("["):  # an IPv6 literal is werkzeug's to judge
                name.rpartition(":")[0 if name.count(":") == 1 else 2].encode("idna")
        except UnicodeError:
            return "invalid Host header"
    return None


class ProxySite(Site):
    displayTracebacks = False
    noisy = False
    protocol = Channel

    def __init__(self, resource: IResource, metrics: Metrics | None = None, idle_timeout: float = 60.0,
                 hits: HitPath | None = None, access_log: AccessLog | None = None, tracing: Any = None,
                 **kwargs: object) -> None:
        # ``timeout``: a connection that sends and receives nothing this long (a slow or stuck client) is closed.
        super().__init__(resource, requestFactory=TimedRequest, timeout=idle_timeout, **kwargs)  # type: ignore[arg-type]
        self.metrics = metrics
        self.hits = hits
        #: :class:`athens.tracing.otel.Tracing` when tracing is on: a span a request.
        self.tracing = tracing
        self.access_log = access_log or (hits.access_log if hits is not None else AccessLog())
        self.in_flight = 0
        self._idle: list[Deferred[None]] = []
        self._channels: dict[object, Deferred[None]] = {}

    def buildProtocol(self, addr: object) -> object:  # noqa: N802 - Twisted's name
        channel = super().buildProtocol(addr)
        if channel is not None and self.hits is not None:
            channel = HitChannel(channel, self.hits)
        if channel is not None:
            lost: Deferred[None] = Deferred()
            self._channels[channel] = lost
            original = channel.connectionLost

            def connection_lost(reason: object) -> None:
                self._channels.pop(channel, None)
                original(reason)
                lost.callback(None)

            channel.connectionLost = connection_lost
        return channel

    def close_connections(self) -> Deferred[None]:
        """Close every client connection after its pending output is written (answers are not cut)."""
        waiting = list(self._channels.values())
        for channel in list(self._channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()
        return DeferredList(waiting).addCallback(lambda _: None)

    def started(self, request: Request) -> None:
        self.in_flight += 1
        request.notifyFinish().addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires when no request is in flight."""
        if self.in_flight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def log(self, request: Request) -> None:
        if self.metrics is not None:
            self.metrics.request(request.path, request.code, request.sentLength)
        if self.tracing is not None:
            self.tracing.request_ended(request)
        arrived = getattr(request, "arrived", None)
        address = request.getClientAddress()
        agent = request.getHeader(b"user-agent")
        self.access_log.record(Line(
            client=getattr(address, "host", "-"),
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace"),
            code=request.code,
            size=request.sentLength,
            duration_ms=round((time.monotonic() - arrived) * 1000, 1) if arrived else 0.0,
            request_id=getattr(request, "request_id", "-"),
            cache=getattr(request, "cache", "-"),
            user_agent=agent.decode("ascii", "replace") if agent else "-",
            module=getattr(request, "module", ""),
            version=getattr(request, "module_version", ""),
            broken=getattr(request, "broken", None) or "",
        ))
