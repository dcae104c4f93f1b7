"""Zips go out with backpressure, and a client that leaves releases what it held."""

from __future__ import annotations

import socket

import attrs
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from athens.storage.interface import IStorage
from athens.storage.memory import BytesBlob, MemoryStorage
from athens.web.app import make_resource
from athens.web.site import ProxySite
from athens.web.streaming import write_stream
from tests.streams import once


class FakeRequest:
    """Enough of a request for write_stream: records writes, lets the test pause it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer = None
        self._disconnected = False

    def registerProducer(self, producer, streaming):  # noqa: N802 - Twisted's name
        assert streaming
        self.producer = producer

    def unregisterProducer(self):  # noqa: N802
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.producer.pauseProducing()  # the transport buffer is "full" after every chunk


@pytest_twisted.ensureDeferred
async def test_a_paused_consumer_stops_the_reading():
    pulled = []

    async def chunks():
        for i in range(5):
            pulled.append(i)
            yield b"%d" % i

    request = FakeRequest()
    done = Deferred.fromCoroutine(write_stream(request, chunks()))
    assert pulled == [0] and request.written == [b"0"]  # paused after one chunk: nothing more read
    request.producer.resumeProducing()
    assert pulled == [0, 1]
    for _ in range(4):
        request.producer.resumeProducing()
    assert await done == 5
    assert request.written == [b"0", b"1", b"2", b"3", b"4"]
    assert request.producer is None


@pytest_twisted.ensureDeferred
async def test_stop_producing_ends_the_stream():
    async def chunks():
        while True:
            yield b"x"

    request = FakeRequest()
    done = Deferred.fromCoroutine(write_stream(request, chunks()))
    request.producer.stopProducing()
    try:
        await done
    except ConnectionDone:
        pass
    else:
        raise AssertionError("write_stream should report the client went away")


@implementer(IStorage)
@attrs.define
class TrackingStorage:
    """Memory storage whose blobs report whether they were closed."""

    inner: MemoryStorage = attrs.field(factory=MemoryStorage)
    closed: list[Deferred] = attrs.field(factory=list)
    name = "tracking"

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def _zip(self, module, version):
        blob = await self.inner.zip(module, version)
        closed: Deferred = Deferred()
        self.closed.append(closed)
        return _Closing(blob.data, closed)

    def zip(self, module, version):
        return Deferred.fromCoroutine(self._zip(module, version))


class _Closing(BytesBlob):
    def __init__(self, data: bytes, closed: Deferred) -> None:
        super().__init__(data, chunk_size=64 << 10)
        self._closed = closed

    def close(self) -> None:
        if not self._closed.called:
            self._closed.callback(None)


def _read_some_then_hang_up(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = s.recv(4096)
    return head


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_mid_zip_releases_the_blob():
    from twisted.internet import reactor

    storage = TrackingStorage()
    await storage.inner.save("example.com/big", "v1.0.0", b"{}", b"m", once(b"z" * (32 << 20)))
    port = reactor.listenTCP(0, ProxySite(make_resource(storage)), interface="127.0.0.1")
    try:
        head = await deferToThread(_read_some_then_hang_up, port.getHost().port, "/example.com/big/@v/v1.0.0.zip")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: 33554432" in head
        # fails with TimeoutError if the blob were never released
        await storage.closed[0].addTimeout(10, reactor)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_mid_zip_is_logged_as_such_with_no_error():
    """The full path (no hit path): no 'Producer was not unregistered', and the line says the client left."""
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    from athens.web.app import make_site
    from tests.test_stream_through import until

    storage = MemoryStorage()
    await storage.save("example.com/big", "v1.0.0", b"{}", b"m", once(b"z" * (32 << 20)))
    port = reactor.listenTCP(0, make_site(storage, hit_path=False), interface="127.0.0.1")
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(5):
            await deferToThread(_read_some_then_hang_up, port.getHost().port, "/example.com/big/@v/v1.0.0.zip")
        await until(lambda: len([e for e in events if e.get("log_namespace") == "athens.access"]) == 5, reactor)
    finally:
        globalLogPublisher.removeObserver(events.append)
        await port.stopListening()
    lines = [e for e in events if e.get("log_namespace") == "athens.access"]
    assert all(e["broken"] == "client left" and e["size"] < 32 << 20 for e in lines), lines
    assert not [e for e in events if e.get("log_failure") is not None], "no error, no traceback"


def _raw(port: int, payload: bytes, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        data = b""
        while read_until_close and (chunk := s.recv(65536)):
            data += chunk
        return data


@pytest_twisted.ensureDeferred
async def test_limits_bodies_headers_and_idle_clients():
    from twisted.internet import reactor

    site = ProxySite(make_resource(MemoryStorage()), idle_timeout=0.5)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    number = port.getHost().port
    try:
        big_body = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        answer = await deferToThread(_raw, number, big_body)
        assert answer.startswith(b"HTTP/1.1 413")
        huge_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"a" * 70000 + b"\r\n\r\n"
        answer = await deferToThread(_raw, number, huge_headers)
        assert answer == b""  # Twisted drops a connection with over 16 KiB of headers...
        fine = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Junk: " + b"a" * 12000 + b"\r\n\r\n"
        assert (await deferToThread(_raw, number, fine)).startswith(b"HTTP/1.1 200")  # ...and serves 12 KiB
        # a client that opens a connection and says nothing is dropped after the idle timeout (no 200, no hang)
        silent = await deferToThread(_raw, number, b"GET /healthz HTTP/1.1\r\n")
        assert silent == b""
    finally:
        await port.stopListening()
