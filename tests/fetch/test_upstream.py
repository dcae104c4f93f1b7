"""The upstream fetcher against an upstream that misbehaves in every way we know: nothing bad is stored."""

from __future__ import annotations

import json

import attrs

import pytest
import pytest_twisted
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from athens.fetch.chain import ChainFetcher, parse_goproxy
from athens.fetch.interface import OriginError, OriginNotFound, OriginTimeout
from athens.fetch.testing import FakeFetcher
from athens.fetch.upstream import Pace, UpstreamFetcher, make_pool
from athens.stash import Stash
from athens.storage.memory import MemoryStorage
from tests.test_stash_and_lists import module_zip

M = "example.com/m"
GOOD_ZIP = module_zip(M, "v1.0.0")


class Misbehaving(Resource):
    """``/<behaviour>/<module>/@v/...``: one upstream personality per first path element."""

    isLeaf = True
    instance: "Misbehaving | None" = None

    def __init__(self) -> None:
        super().__init__()
        Misbehaving.instance = self

    def render_GET(self, request):  # noqa: N802 - Twisted's name
        parts = request.path.decode().strip("/").split("/")
        behaviour, file = parts[0], parts[-1]
        if behaviour == "slowinfo" and file.endswith(".info"):  # half an answer, then nothing
            request.setHeader(b"content-length", b"100")
            request.write(b'{"Version": ')
            self.lost = getattr(self, "lost", [])
            request.notifyFinish().addBoth(self.lost.append)
            return NOT_DONE_YET
        if behaviour == "loop":
            request.redirect(request.path)
            return b""
        if behaviour == "e500":
            request.setResponseCode(500)
            return b"internal upstream trouble"
        if behaviour == "e404" or (behaviour == "gone" and file.endswith(".zip")):
            request.setResponseCode(404 if behaviour == "e404" else 410)
            return b"not found: example.com/m@v1.0.0: unknown revision"
        if behaviour == "noanswer":
            return NOT_DONE_YET  # headers never come
        if file == "list":
            return b"v1.0.0\nv1.1.0\n" if behaviour != "badlist" else b"v1.0.0\n../../etc\n"
        if file.endswith(".info") or file == "@latest":
            if behaviour == "garbage":
                return b"{not json"
            if behaviour == "othervers":
                return json.dumps({"Version": "v1.9.9"}).encode()
            return json.dumps({"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}).encode()
        if file.endswith(".mod"):
            return f"module {M}\n".encode()
        data = module_zip("other.example/x", "v1.0.0") if behaviour == "wrongzip" else GOOD_ZIP
        if behaviour == "huge":
            request.setHeader(b"content-length", b"%d" % (600 << 20))
            request.write(b"PK")
            return NOT_DONE_YET
        request.setHeader(b"content-length", b"%d" % len(data))
        if behaviour == "half":
            request.write(data[: len(data) // 2])
            request.channel.transport.abortConnection()
            return NOT_DONE_YET
        if behaviour == "stall":
            request.write(data[: len(data) // 2])
            return NOT_DONE_YET  # and nothing more, ever
        if behaviour == "drip":  # a byte every 50 ms: never quiet, never done
            from twisted.internet import reactor
            from twisted.internet.task import LoopingCall

            drip = LoopingCall(lambda: request.write(b"x"))
            drip.clock = reactor
            drip.start(0.05)
            request.notifyFinish().addBoth(lambda _: drip.stop() if drip.running else None)
            return NOT_DONE_YET
        return data


@pytest_twisted.async_yield_fixture
async def upstream():
    from twisted.internet import reactor

    port = reactor.listenTCP(0, Site(Misbehaving()), interface="127.0.0.1")
    pool = make_pool(reactor)

    def fetcher(behaviour: str) -> UpstreamFetcher:
        return UpstreamFetcher(f"http://127.0.0.1:{port.getHost().port}/{behaviour}", reactor, pool,
                               timeout=1.0, idle_timeout=1.0)

    yield fetcher
    await pool.closeCachedConnections()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_good_upstream_fills_the_cache(upstream):
    storage = MemoryStorage()
    await Stash(upstream("good"), storage).stash(M, "v1.0.0")
    blob = await storage.zip(M, "v1.0.0")
    assert b"".join([c async for c in blob.chunks()]) == GOOD_ZIP
    listing = await upstream("good").listing(M)
    assert listing.versions == ("v1.0.0", "v1.1.0") and json.loads(listing.latest)["Version"] == "v1.0.0"


@pytest.mark.parametrize(
    "behaviour, error, words",
    [
        ("e500", OriginError, "answered 500"),
        ("e404", OriginNotFound, "unknown revision"),
        ("gone", OriginNotFound, "unknown revision"),
        ("noanswer", OriginTimeout, "did not answer"),
        ("stall", OriginTimeout, "sent nothing"),
        ("half", OriginError, "broke"),
        ("garbage", OriginError, "not JSON"),
        ("othervers", OriginError, "naming 'v1.9.9'"),
        ("wrongzip", OriginError, "invalid zip"),
        ("loop", OriginError, "redirects in a loop"),
        ("huge", OriginError, "over the limit"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_upstream_stores_nothing(upstream, behaviour, error, words):
    storage = MemoryStorage()
    with pytest.raises(error, match=words) as raised:
        await Stash(upstream(behaviour), storage).stash(M, "v1.0.0")
    assert type(raised.value) is error
    assert await storage.list(M) == []


@pytest_twisted.ensureDeferred
async def test_a_list_with_junk_is_refused(upstream):
    with pytest.raises(OriginError, match="not a version"):
        await upstream("badlist").listing(M)


@pytest_twisted.ensureDeferred
async def test_goproxy_list_semantics(upstream):
    direct = FakeFetcher()
    direct.add(M, "v1.0.0", GOOD_ZIP)
    made = {"e404": upstream("e404"), "e500": upstream("e500")}

    def chain(value: str) -> ChainFetcher:
        return ChainFetcher(parse_goproxy(value, lambda url: made[url.rsplit("/", 1)[1]], lambda: direct))

    # ',' falls through on not found only
    assert (await chain("http://x/e404,direct").download(M, "v1.0.0")).version == "v1.0.0"
    with pytest.raises(OriginError, match="answered 500"):
        await chain("http://x/e500,direct").download(M, "v1.0.0")
    # '|' falls through on any error
    fetched = await chain("http://x/e500|direct").download(M, "v1.0.0")
    await fetched.cleanup()
    # off stops the list
    with pytest.raises(OriginNotFound, match="GOPROXY=off"):
        await chain("http://x/e404,off,direct").download(M, "v1.0.0")
    assert direct.count("download", M) == 2



@pytest.mark.parametrize("pace, words", [
    (Pace(deadline=1.0, min_rate=0, window=0.3), r"took longer than 1s \(Timeout\)"),
    (Pace(deadline=60.0, min_rate=1000, window=0.5), "under the minimum of 1000 bytes a second"),
])
@pytest_twisted.ensureDeferred
async def test_a_dripping_zip_meets_the_deadline_or_the_minimum_rate(upstream, pace, words):
    """Item 8 of the hardening issue: an upstream that never goes quiet still cannot hold a fill for ever."""
    import time

    dripping = upstream("drip")
    dripping = attrs.evolve(dripping, pace=pace)
    storage = MemoryStorage()
    started = time.monotonic()
    with pytest.raises(OriginTimeout, match=words):
        await Stash(dripping, storage).stash(M, "v1.0.0")
    assert time.monotonic() - started < 5
    assert await storage.list(M) == []



@pytest_twisted.ensureDeferred
async def test_a_stalled_answer_is_a_504_and_its_connection_is_closed(upstream):
    """Item 7 of the hardening issue: the upstream connection goes with the answer given up."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    with pytest.raises(OriginTimeout, match="stalled"):
        await upstream("slowinfo").small(M, "v1.0.0", "info")
    server = Misbehaving.instance
    for _ in range(100):
        if getattr(server, "lost", []):
            break
        await deferLater(reactor, 0.02, lambda: None)
    assert server.lost, "the proxy closed the stalled upstream connection"
