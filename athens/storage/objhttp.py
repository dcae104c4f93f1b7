"""
HTTP for object-store clients (Google Cloud Storage, Azure Blob) on treq.

One place decides what a store's answer means: the statuses each call
expects pass, 404 is :class:`NotFound`, throttling and server errors (429,
5xx) are retried with back-off until the deadline (``Timeout``), a refused
connection or an access error is :class:`StorageUnavailable` at once (503
with the reason, never a wait).  Bodies stream both ways: a response is read
through a bounded buffer that pauses the connection, so a zip is never held
whole in memory.  Everything a store sends is untrusted: bodies are read
within limits, and error details are cut short before they reach a message.
"""

from __future__ import annotations

import collections
import json
from typing import Any, AsyncIterator

import attrs
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from zope.interface import Interface

from athens.storage.interface import NotFound, StorageError, StorageUnavailable

#: Statuses worth another try after a pause: throttling and passing server trouble.
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
#: The most of an answer read when only its JSON or XML matters (listings, tokens, errors).
MAX_SMALL = 16 << 20
#: A response body is paused above this many unread bytes.
HIGH_WATER = 1 << 20


class IAuth(Interface):
    """Credentials for one store's requests."""

    def headers(method: str, url: str, headers: dict[str, str], length: int) -> Deferred[dict[str, str]]:
        """The headers to add to a request about to be sent (signed, or a bearer token)."""

    def expired() -> None:
        """The store answered 401: drop any cached token so the next request fetches a new one."""


@attrs.frozen
class Backoff:
    """How long to wait between tries of a throttled request, within the deadline."""

    #: Seconds a request may keep being retried (``Timeout``).
    deadline: float = 300.0
    first: float = 0.2
    cap: float = 10.0


def _short(text: str, limit: int = 200) -> str:
    """A store's words for a message: printable, one line, short."""
    clean = "".join(c if c.isprintable() else " " for c in text).strip()
    return clean[:limit] + ("..." if len(clean) > limit else "")


@attrs.define
class StoreHTTP:
    """The requests of one object-store client, with its name for messages."""

    #: ``gcs`` or ``azureblob``: every error message starts with it.
    name: str
    reactor: IReactorTime
    backoff: Backoff = Backoff()
    #: Seconds without a byte, while a reader waits, before a body is abandoned.
    idle: float = 60.0
    #: Kept-alive connections, through the egress proxy of the environment (``HTTPS_PROXY``).
    pool: HTTPConnectionPool = attrs.field(default=None)
    client: HTTPClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.pool is None:
            from athens.fetch.upstream import make_pool

            self.pool = make_pool(self.reactor)
        self.client = HTTPClient(self.pool.egress)

    def close(self) -> Deferred[None]:
        """Close the kept-alive connections (at shutdown)."""
        return self.pool.closeCachedConnections()

    async def request(
        self,
        method: str,
        url: str,
        what: str,
        expect: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        auth: Any = None,
        timeout: float | None = None,
    ) -> IResponse:
        """
        Send until the answer is one of ``expect`` (returned, its body unread)
        or an error: :class:`NotFound` for an unexpected 404, else
        :class:`StorageUnavailable` or :class:`StorageError` with the reason.
        ``what`` names the request in messages (``get m/@v/v1.zip``);
        ``timeout`` bounds the wait for the answer's headers, the upload of
        ``data`` included (default: :attr:`idle`).
        """
        start = self.reactor.seconds()
        delay = self.backoff.first
        refreshed = False
        stale_retried = False
        while True:
            sent = dict(headers or {})
            if auth is not None:
                sent.update(await auth.headers(method, url, sent, len(data or b"")))
            try:
                # Never follow a redirect: a 308 is how a resumable upload says "go on".
                response = await self.client.request(method, url, headers=sent, data=data, unbuffered=True,
                                                     allow_redirects=False, timeout=timeout or self.idle)
            except (ConnectError, DNSLookupError, ConnectingCancelledError) as e:
                raise StorageUnavailable(f"{self.name}: {what}: cannot connect: {e.__class__.__name__}") from None
            except ResponseNeverReceived:
                # A kept-alive connection the store had closed: once more at once, on a fresh one.
                if stale_retried:
                    raise StorageUnavailable(f"{self.name}: {what}: the connection was closed before an answer")
                stale_retried = True
                continue
            except (ResponseFailed, TimeoutError, defer.CancelledError) as e:
                raise StorageUnavailable(f"{self.name}: {what}: no answer ({e.__class__.__name__})") from None
            code = response.code
            if code in expect:
                return response
            detail = await self.detail(response)
            if code == 401 and auth is not None and not refreshed:
                auth.expired()
                refreshed = True
                continue
            if code == 404:
                raise NotFound(f"{self.name}: {what}: not found")
            if code in (401, 403):
                raise StorageUnavailable(f"{self.name}: {what}: access denied ({code} {detail})")
            if code not in RETRYABLE:
                raise StorageError(f"{self.name}: {what}: unexpected answer {code} {detail}")
            if self.reactor.seconds() + delay - start > self.backoff.deadline:
                raise StorageUnavailable(f"{self.name}: {what}: {code} {detail} (still after "
                                         f"{self.backoff.deadline:g}s of retries)")
            await deferLater(self.reactor, delay, lambda: None)
            delay = min(delay * 2, self.backoff.cap)

    async def detail(self, response: IResponse) -> str:
        """
        What an error answer says, cut short: Azure's error code header,
        Google's ``error.message`` or OAuth's ``error``/``error_description``,
        else the start of the body.
        """
        code = response.headers.getRawHeaders("x-ms-error-code", [""])[0]
        try:
            body = await self.read(response, 4096, truncate=True)
        except StorageError:
            body = b""
        if code:
            return _short(code)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            error = doc.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return _short(error["message"])
            words = [doc.get(k) for k in ("error", "error_description")]
            if any(isinstance(w, str) for w in words):
                return _short(": ".join(w for w in words if isinstance(w, str)))
        text = body.decode("utf-8", "replace")
        return _short(text) or _short(response.phrase.decode("latin-1", "replace"))

    async def read(self, response: IResponse, limit: int = MAX_SMALL, truncate: bool = False) -> bytes:
        """A small body whole: at most ``limit`` bytes (more fails, or is cut when ``truncate``)."""
        pipe = BodyPipe(self.reactor, self.idle, self.name)
        response.deliverBody(pipe)
        parts: list[bytes] = []
        total = 0
        try:
            async for chunk in pipe.chunks():
                total += len(chunk)
                if total > limit:
                    if truncate:
                        parts.append(chunk[: limit - total])
                        break
                    raise StorageError(f"{self.name}: an answer over {limit} bytes")
                parts.append(chunk)
        finally:
            pipe.close()
        return b"".join(parts)

    def stream(self, response: IResponse, size: int) -> "StreamBlob":
        """A Blob reading ``response``'s body as it arrives."""
        pipe = BodyPipe(self.reactor, self.idle, self.name)
        response.deliverBody(pipe)
        return StreamBlob(pipe, size)

    async def discard(self, response: IResponse) -> None:
        """Drop a body nobody needs (the connection closes rather than drain a large one)."""
        await self.read(response, 64 << 10, truncate=True)


class BodyPipe(Protocol):
    """
    A response body as an async iterator.  At most about :data:`HIGH_WATER`
    bytes wait unread: above it the connection is paused until the reader
    catches up, so a slow reader holds the store back instead of filling memory.
    """

    def __init__(self, reactor: IReactorTime, idle: float, name: str) -> None:
        self.reactor, self.idle, self.name = reactor, idle, name
        self.queue: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.ended: Failure | None = None
        self.waiter: Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.queue.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pauseProducing()
        self._wake()

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        self.ended = reason
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.callback(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self.queue:
                chunk = self.queue.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered <= HIGH_WATER // 2 and self.ended is None:
                    self.paused = False
                    self.transport.resumeProducing()
                yield chunk
                continue
            if self.ended is not None:
                if self.ended.check(ResponseDone):
                    return
                why = "cut short" if self.ended.check(PotentialDataLoss) else self.ended.getErrorMessage()
                raise StorageUnavailable(f"{self.name}: the answer broke off: {_short(why)}")
            self.waiter = Deferred()
            self.waiter.addTimeout(self.idle, self.reactor)
            try:
                await self.waiter
            except defer.TimeoutError:
                self.close()
                raise StorageUnavailable(f"{self.name}: nothing received for {self.idle:g}s in the middle "
                                         "of an answer") from None

    def close(self) -> None:
        """Stop reading: an unfinished body closes its connection."""
        if self.ended is None and self.transport is not None:
            self.ended = Failure(StorageError("closed by the reader"))
            self.queue.clear()
            self.transport.stopProducing()


@attrs.define
class StreamBlob:
    """A storage Blob over an object being downloaded."""

    pipe: BodyPipe
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self.pipe.chunks():
            received += len(chunk)
            if received > self.size:
                raise StorageError(f"{self.pipe.name}: the object is longer than its declared {self.size} bytes")
            yield chunk
        if received != self.size:
            raise StorageError(f"{self.pipe.name}: the object ended at {received} of {self.size} bytes")

    def close(self) -> None:
        self.pipe.close()


def content_length(response: IResponse, name: str) -> int:
    """The declared length of a body, which a Blob needs before its first byte."""
    if isinstance(response.length, int):
        return response.length
    raise StorageError(f"{name}: the store sent an object without its length")
