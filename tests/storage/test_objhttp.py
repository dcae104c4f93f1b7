"""
What the object-store clients do when the store misbehaves: unreachable,
throttling, refusing credentials, keeping only part of an upload piece, a
reader slower than the store.  Loopback servers the tests run, and Azurite.
"""

from __future__ import annotations

import hashlib
import re

import pytest
import pytest_twisted
from twisted.web.resource import Resource
from twisted.web.server import Site

from athens.storage import objhttp
from athens.storage.azure import AzureBucket, AzureSettings
from athens.storage.gcs import GCSBucket, GCSSettings
from athens.storage.interface import StorageError, StorageUnavailable
from athens.storage.objhttp import Backoff
from tests.daemon import free_port
from tests.objectservers import AZURITE_ACCOUNT, AZURITE_KEY
from tests.streams import Boom, pattern, pattern_digest


class Store(Resource):
    """A GCS-shaped store scripted per test."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.base = ""
        self.requests: list[tuple[str, str, str]] = []
        #: Statuses to answer, in order, before answering normally.
        self.throttle: list[int] = []
        self.big = b""
        #: The upload session: what it holds, and whether the next piece is kept only in part.
        self.session = bytearray()
        self.keep_part = False
        self.finished: bytes | None = None

    def render(self, request):  # noqa: N802 - Twisted's name
        method, path = request.method.decode(), request.path.decode()
        self.requests.append((method, path, request.getHeader("content-range") or ""))
        if self.throttle:
            request.setResponseCode(self.throttle.pop(0))
            return b'{"error": {"message": "slow down"}}'
        if path == "/upload/storage/v1/b/b/o":
            request.setHeader("location", self.base + "/session")
            return b"{}"
        if path == "/session":
            return self._piece(request)
        if path.startswith("/storage/v1/b/b/o/big"):
            return self.big
        return b'{"name": "b"}'

    def _piece(self, request) -> bytes:
        if request.method == b"DELETE":
            request.setResponseCode(499)
            return b""
        span = re.fullmatch(r"bytes (\d+)-(\d+)/(\*|\d+)|bytes \*/(\d+)", request.getHeader("content-range"))
        data = request.content.read()
        if span.group(1) is not None:
            assert int(span.group(1)) == len(self.session), "a piece out of place"
            kept = data[: 256 << 10] if self.keep_part else data
            self.keep_part = False
            self.session += kept
        if (span.group(3) or "*") == "*" and span.group(4) is None:
            request.setResponseCode(308)
            request.setHeader("range", f"bytes=0-{len(self.session) - 1}")
            return b""
        self.finished = bytes(self.session)
        return b"{}"


@pytest_twisted.async_yield_fixture
async def store():
    from twisted.internet import reactor

    resource = Store()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.base = f"http://127.0.0.1:{port.getHost().port}"
    yield resource
    await port.stopListening()


def _gcs(endpoint: str, deadline: float = 30) -> GCSBucket:
    from twisted.internet import reactor

    bucket = GCSBucket(GCSSettings("b", emulator=endpoint, chunk_size=1 << 20), reactor)
    bucket.http.backoff = Backoff(deadline=deadline, first=0.01, cap=0.05)
    return bucket


@pytest_twisted.ensureDeferred
async def test_an_unreachable_store_is_unavailable_at_once_with_the_reason():
    bucket = _gcs(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(StorageUnavailable, match=r"gcp: bucket metadata: cannot connect"):
            await bucket.ping()
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_throttling_is_retried_until_it_passes_or_the_deadline(store):
    bucket = _gcs(store.base)
    try:
        store.throttle = [429, 503, 500]
        await bucket.ping()
        assert len(store.requests) == 4
        bucket.http.backoff = Backoff(deadline=0.05, first=0.02, cap=0.02)
        store.throttle = [503] * 100
        with pytest.raises(StorageUnavailable, match=r"503 slow down \(still after 0.05s of retries\)"):
            await bucket.ping()
        store.throttle = [400]
        with pytest.raises(StorageError, match="unexpected answer 400"):
            await bucket.exists("x")
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_a_resumable_upload_sends_again_what_the_store_did_not_keep(store):
    bucket = _gcs(store.base)
    try:
        store.keep_part = True
        size = (3 << 20) + 5
        assert await bucket.upload("m/@v/v1.0.0.zip", pattern(b"resend", size)) == size
        assert hashlib.sha256(store.finished).hexdigest() == pattern_digest(b"resend", size)
        ranges = [r for m, p, r in store.requests if p == "/session"]
        assert ranges[:2] == ["bytes 0-1048575/*", "bytes 262144-1048575/*"]
        assert ranges[-1] == f"bytes 3145728-{size - 1}/{size}"

        # A stream that ends on a piece boundary is finished by an empty request naming the total.
        store.session, store.requests = bytearray(), []
        assert await bucket.upload("m/@v/v1.1.0.zip", pattern(b"even", 2 << 20)) == 2 << 20
        assert [r for m, p, r in store.requests if p == "/session"][-1] == f"bytes */{2 << 20}"
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_stream_cancels_its_upload_session(store):
    bucket = _gcs(store.base)
    try:
        with pytest.raises(Boom):
            await bucket.upload("m/@v/v1.0.0.zip", pattern(b"cancel", 4 << 20, fail_at=2 << 20))
        assert store.requests[-1][:2] == ("DELETE", "/session") and store.finished is None
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_holds_the_store_back_instead_of_filling_memory(store, monkeypatch):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    store.big = b"z" * (24 << 20)
    seen: list[int] = []
    original = objhttp.BodyPipe.dataReceived

    def watch(self, data):
        original(self, data)
        seen.append(self.buffered)

    monkeypatch.setattr(objhttp.BodyPipe, "dataReceived", watch)
    bucket = _gcs(store.base)
    try:
        blob = await bucket.open("big")
        total = 0
        async for chunk in blob.chunks():
            total += len(chunk)
            await deferLater(reactor, 0.001, lambda: None)  # a slow client
        assert total == blob.size == 24 << 20
        # Paused above the high-water mark: what waits is bounded by it plus what was in flight then.
        assert max(seen) < objhttp.HIGH_WATER + (1 << 20)
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_a_wrong_account_key_or_a_missing_container_is_unavailable_with_the_reason(azurite):
    from twisted.internet import reactor

    wrong = AzureBucket(AzureSettings(AZURITE_ACCOUNT, azurite.create_container(), "d3Jvbmcga2V5",
                                      endpoint=azurite.endpoint), reactor)
    absent = AzureBucket(AzureSettings(AZURITE_ACCOUNT, "absent", AZURITE_KEY, endpoint=azurite.endpoint), reactor)
    try:
        with pytest.raises(StorageUnavailable, match=r"azureblob: container properties: access denied \(403"):
            await wrong.ping()
        with pytest.raises(StorageUnavailable, match="container 'absent' does not exist"):
            await absent.ping()
    finally:
        await wrong.close()
        await absent.close()
