"""
The hit path: answers the full path already gave, replayed without it.

Klein decides every answer.  When it serves a stored version (or a list)
with 200, the protocol handler :meth:`Answers.remember`\\ s the status,
headers and body (for a zip on disk, the file) under the request target.
:class:`HitChannel` sits in front of twisted.web's ``HTTPChannel`` on every
connection: a plain ``GET``/``HEAD`` for a remembered target, with
credentials when basic auth is on, is answered at once from those bytes
(zips with ``sendfile``: :mod:`athens.web.sendfile`); anything else, or anything
unusual (conditional, range and cache-only requests, whose answers are not the
remembered 200), is handed to ``HTTPChannel`` and the Klein app unchanged, one
request at a time, so answers keep their order.  Deletes anywhere clear
every answer (:meth:`Answers.clear`, polled by the service).
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any, Callable

import attrs
from twisted.internet.abstract import FileDescriptor
from twisted.internet.protocol import Protocol
from twisted.web.http import HTTPChannel, datetimeToString

from athens.metrics import Metrics
from athens.web.accesslog import AccessLog, Line
from athens.web.answers import Answer, Answers, OpenFile
from athens.web.requestid import request_id
from athens.web.sendfile import SendFile, send

#: Largest request head (and pipelined backlog) read here; more is handed over (HTTPChannel refuses it).
MAX_HEAD = 16 << 10
#: Requests that may carry a body (or switch protocols): only HTTPChannel knows where they end.
_MAY_HAVE_BODY = re.compile(rb"(?i)content-length|transfer-encoding|upgrade|expect")
#: Headers that make the answer something other than the remembered 200 (a body; a 304, 206 or 416; the cache
#: only): such requests go to the full path.
_FULL_PATH_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"if-none-match",
                                b"if-modified-since", b"range", b"if-range", b"disable-module-fetch"))


@attrs.define
class HitPath:
    """What every connection's :class:`HitChannel` shares."""

    answers: Answers
    metrics: Metrics
    access_log: AccessLog
    #: ``Authorization`` header value that basic auth accepts; None when auth is off.
    authorization: bytes | None = None
    #: Called with (module, version) for every version served: the last-use record for ``gc``.
    used: Callable[[str, str], None] = lambda module, version: None
    #: ``ForceSSL``: only requests that say ``X-Forwarded-Proto: https`` are hits (the rest are redirected).
    https_only: bool = False
    #: Requests answered here (tests and the curious check which path answered).
    answered: int = 0
    #: :class:`athens.tracing.otel.Tracing` when tracing is on: a span a hit, and a request that continues a
    #: trace (``traceparent``) goes to the full path, which makes its span a child.
    tracing: Any = None
    declined: frozenset[bytes] = _FULL_PATH_HEADERS
    _date_second: int = -1
    _date: bytes = b""

    def __attrs_post_init__(self) -> None:
        if self.tracing is not None:
            self.declined = _FULL_PATH_HEADERS | {b"traceparent"}

    def date(self, now: float) -> bytes:
        second = int(now)
        if second != self._date_second:
            self._date_second, self._date = second, b"Date: %s\r\n" % datetimeToString(second)
        return self._date


class HitChannel(Protocol):
    """One client connection: hits answered here, everything else by ``inner`` (an HTTPChannel)."""

    def __init__(self, inner: HTTPChannel, hits: HitPath) -> None:
        self.inner, self.hits = inner, hits
        self.buffer = b""
        #: Everything goes to ``inner`` from now on (a request with a body, TLS, a protocol upgrade...).
        self.delegated = False
        #: ``inner`` or a sendfile is answering; later requests wait in ``buffer``.
        self.busy = False
        self.serving = False
        self.held = False
        self.client = "-"
        inner.on_done = self._inner_done  # type: ignore[attr-defined]

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        self.transport = transport
        self.connected = True
        peer = transport.getPeer()
        self.client = getattr(peer, "host", "-")
        # Plain TCP or Unix sockets only: over TLS the full path answers (and no sendfile is possible).
        self.delegated = not isinstance(transport, FileDescriptor)
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.delegated:
            self.inner.dataReceived(data)
            return
        self.buffer = self.buffer + data if self.buffer else data
        self.inner.resetTimeout()  # the idle timeout (ClientIdleTimeout) counts from the last byte either way
        if not self.busy:
            self._serve()
        elif len(self.buffer) > MAX_HEAD and not self.held:
            self.held = True  # a client pipelining this far ahead waits until its answers are out
            self.transport.pauseProducing()

    def _idle(self) -> None:
        """The answer in progress is out: serve what waits."""
        self.busy = False
        if self.held:
            self.held = False
            self.transport.resumeProducing()
        if self.buffer and not self.serving:  # (if answered at once, the loop in _serve goes on by itself)
            self._serve()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        self.connected = False
        self.inner.connectionLost(reason)

    def _serve(self) -> None:
        arrived = time.monotonic()
        self.serving = True
        try:
            while not self.busy and self.buffer and self.connected:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        self._delegate()
                    return
                head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                if self._answer(head, arrived):
                    continue
                if _MAY_HAVE_BODY.search(head):
                    self.buffer = head + b"\r\n\r\n" + self.buffer
                    self._delegate()  # where its body ends is HTTPChannel's to find: it has the rest for good
                else:
                    self._hand_over(head + b"\r\n\r\n")
        finally:
            self.serving = False

    def _hand_over(self, request: bytes) -> None:
        """One request to the full path; the rest waits until it is answered (``_inner_done``)."""
        self.busy = True
        self.inner.dataReceived(request)

    def _inner_done(self) -> None:
        if not self.inner.persistent:
            self.connected = False  # HTTPChannel is closing the connection
        else:
            self._idle()

    def _delegate(self) -> None:
        self.delegated = True
        data, self.buffer = self.buffer, b""
        if data:
            self.inner.dataReceived(data)

    def _answer(self, head: bytes, arrived: float) -> bool:
        """Answer a remembered hit; False if the full path must (anything not plainly a hit)."""
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD") or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return False
        method, target, version = parts
        answer = self.hits.answers.get(target)
        if answer is None or answer.expires < arrived:
            return False
        given_id = agent = authorization = connection = proto = None
        host = False
        declined = self.hits.declined
        for header in rest.split(b"\r\n"):
            name, colon, value = header.partition(b":")
            if not colon or name != name.strip():
                return False  # malformed or folded: HTTPChannel's answer
            name = name.lower()
            value = value.strip()
            if name == b"host":
                if host or not _sane_host(value):
                    return False
                host = True
            elif name == b"x-request-id":
                given_id = given_id or value
            elif name == b"user-agent":
                agent = value
            elif name == b"authorization":
                authorization = value
            elif name == b"connection":
                connection = value
            elif name == b"x-forwarded-proto":
                proto = value
            elif name in declined:
                return False
        if version == b"HTTP/1.1" and not host:
            return False
        if self.hits.authorization is not None and authorization != self.hits.authorization:
            return False
        if self.hits.https_only and proto != b"https":
            return False
        file = None
        if answer.path and method == b"GET":
            try:
                file = self.hits.answers.open(answer.path, arrived)
            except OSError:
                self.hits.answers.forget(target)  # deleted: the full path says what is true now
                return False
        keep = version == b"HTTP/1.1" and not (connection and b"close" in [t.lower() for t in connection.split(b" ")])
        rid = request_id(given_id)
        out = [version, b" 200 OK\r\n", answer.headers, self.hits.date(time.time()),
               b"X-Request-Id: ", rid.encode(), b"\r\n"]
        if version == b"HTTP/1.1" and not keep:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        sent = 0
        if method == b"GET" and not answer.path:
            out.append(answer.body)
            sent = answer.size
        send(self.transport, b"".join(out), more=file is not None)
        self.hits.answered += 1
        ending = _Ending(self, keep, method, target, rid, agent, answer, arrived)
        if answer.module:
            self.hits.used(answer.module, answer.version)
        if file is not None:
            self.busy = True
            ending.file = file
            SendFile(self.transport, self.inner, file.fd, answer.size, ending.sent).start()
        else:
            ending.done(sent)
        return True

    def _after(self, keep: bool) -> None:
        if not keep:
            self.connected = False
            self.transport.loseConnection()


@attrs.define
class _Ending:
    """What follows an answer: the access line, the metrics, and the next request (or the close)."""

    channel: HitChannel
    keep: bool
    method: bytes
    target: bytes
    request_id: str
    agent: bytes | None
    answer: Answer
    arrived: float
    #: The zip being sent, released when it is out.
    file: OpenFile | None = None

    def done(self, sent: int, broken: str = "") -> None:
        hits, answer = self.channel.hits, self.answer
        duration = round((time.monotonic() - self.arrived) * 1000, 1)
        hits.access_log.record(Line(self.channel.client, self.method.decode(), self.target.decode("ascii", "replace"),
                                    200, sent, duration, self.request_id, "hit",
                                    self.agent.decode("ascii", "replace") if self.agent else "-", answer.module,
                                    answer.version, broken))
        hits.metrics.served_hit(answer.endpoint, 200, sent)
        if hits.tracing is not None:
            hits.tracing.hit(self.method, self.target, self.request_id, self.arrived, sent, answer.module,
                             answer.version, broken)
        if broken:
            return
        self.channel._after(self.keep)

    def sent(self, size: int, broken: str) -> None:
        """A file is out (:class:`SendFile`): then the requests that waited."""
        if self.file is not None:
            self.channel.hits.answers.release(self.file)
        self.done(size, broken)
        if not broken and self.channel.connected:
            self.channel._idle()


@functools.lru_cache(maxsize=1024)  # clients send the same few hosts again and again
def _sane_host(value: bytes) -> bool:
    """A host werkzeug accepts too (labels of 1-63 letters, digits, hyphens; an optional port); else the full path."""
    host, _, port = value.rpartition(b":") if value.count(b":") == 1 else (value, b"", b"")
    if port and not (port.isdigit() and len(port) <= 5):
        return False
    labels = host.split(b".")
    return 0 < len(host) <= 253 and all(
        0 < len(label) <= 63 and label.replace(b"-", b"").isalnum() and label.isascii() for label in labels
    )


class Channel(HTTPChannel):
    """twisted.web's channel, telling the hit path when it has answered a request it was handed."""

    on_done: Callable[[], None] | None = None

    def requestDone(self, request: Any) -> None:  # noqa: N802 - Twisted's name
        super().requestDone(request)
        if self.on_done is not None:
            self.on_done()
