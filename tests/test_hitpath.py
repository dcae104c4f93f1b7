"""
The hit path gives the answers the full path gave, byte for byte where it
matters, over every way a client can ask: GET and HEAD, keep-alive,
pipelining, HTTP/1.0, ``Connection: close``, request ids, basic auth and
PathPrefix; zips go out with sendfile, and a client that leaves is logged.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from athens.storage.disk import DiskStorage
from athens.web.answers import LINK_CHECK
from athens.web.app import make_site
from tests import rawhttp
from tests.inprocess import serve
from tests.streams import once
from tests.test_stash_and_lists import module_zip

M = "example.com/hits"
INFO = json.dumps({"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}).encode()
MOD = f"module {M}\n".encode()
ZIP = module_zip(M, "v1.0.0", {f"f{i}.go": os.urandom(30_000) for i in range(10)})
TARGETS = {
    "info": (f"/{M}/@v/v1.0.0.info", INFO),
    "mod": (f"/{M}/@v/v1.0.0.mod", MOD),
    "zip": (f"/{M}/@v/v1.0.0.zip", ZIP),
    "list": (f"/{M}/@v/list", b"v1.0.0\n"),
    "latest": (f"/{M}/@latest", INFO),
}
#: The headers that matter: the same from both paths (X-Request-Id: an echo, or a fresh id each time).
SAME = ("content-type", "content-length", "server", "connection", "etag", "last-modified", "cache-control",
        "accept-ranges")


@pytest_twisted.async_yield_fixture
async def proxy(tmp_path):
    started = []

    async def make(**options):
        storage = DiskStorage(str(tmp_path / f"store{len(started)}"))
        await storage.save(M, "v1.0.0", INFO, MOD, once(ZIP))
        served = serve(make_site(storage, **options))
        started.append(served)
        return served, served.port.factory.hits, storage

    yield make
    for served in started:
        await served.close()


def ask(port: int, data: bytes, head: bool | list[bool] = False) -> list[rawhttp.RawResponse]:
    return rawhttp.parse(rawhttp.exchange(port, data), head=head)


@pytest.mark.parametrize("kind", list(TARGETS))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("form", ["keep-alive", "close", "HTTP/1.0"])
@pytest_twisted.ensureDeferred
async def test_the_hit_path_answers_as_the_full_path_did(proxy, kind, method, form):
    served, hits, _ = await proxy()
    port = served.port.getHost().port
    target, expected = TARGETS[kind]
    headers = {"Connection": "close"} if form == "close" else {}
    version = "HTTP/1.0" if form == "HTTP/1.0" else "HTTP/1.1"
    one = rawhttp.request(method, target, headers, version)
    # keep-alive: both on one connection, the second marked close so that the server ends it.
    if form == "keep-alive":
        data = one + rawhttp.request(method, target, {"Connection": "close"})
        full, hit = await deferToThread(ask, port, data, method == "HEAD")
    else:
        (full,) = await deferToThread(ask, port, one, method == "HEAD")
        (hit,) = await deferToThread(ask, port, one, method == "HEAD")
    assert hits.answered == 1, "the second answer came from the hit path"
    assert full.status == hit.status == 200
    assert full.body == hit.body == (b"" if method == "HEAD" else expected)
    assert int(hit.headers["content-length"]) == len(expected)
    for name in SAME:
        if form == "keep-alive" and name == "connection":
            continue  # (only the second was marked close)
        assert full.headers.get(name) == hit.headers.get(name), name
    assert full.headers["x-request-id"] != hit.headers["x-request-id"]
    assert "date" in hit.headers
    # The caching headers are among those both paths give alike, and they are there.
    if kind in ("info", "mod", "zip"):
        assert hit.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert hit.headers["last-modified"] == "Tue, 02 Jan 2024 03:04:05 GMT"  # the .info's Time
    else:
        assert hit.headers["cache-control"] == "public, max-age=60"
        assert "last-modified" not in hit.headers
    assert hit.headers["etag"].startswith('"') and len(hit.headers["etag"]) == 34
    assert ("accept-ranges" in hit.headers) is (kind == "zip")


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_in_order_by_either_path(proxy):
    served, hits, _ = await proxy()
    port = served.port.getHost().port
    await deferToThread(ask, port, rawhttp.request("GET", TARGETS["info"][0], {"Connection": "close"}))
    await deferToThread(ask, port, rawhttp.request("GET", TARGETS["zip"][0], {"Connection": "close"}))
    order = ["info", "mod", "zip", "info", "list", "mod", "zip"]  # mod and list: the full path, the first time
    data = b"".join(rawhttp.request("GET", TARGETS[k][0]) for k in order)
    data += rawhttp.request("HEAD", TARGETS["zip"][0], {"Connection": "close", "X-Request-Id": "pipelined-1"})
    answers = await deferToThread(ask, port, data, [False] * len(order) + [True])
    assert [a.body for a in answers] == [TARGETS[k][1] for k in order] + [b""]
    assert answers[-1].headers["x-request-id"] == "pipelined-1"
    assert answers[-1].headers["connection"] == "close"
    assert hits.answered >= 5


@pytest.mark.parametrize("given, echoed", [("build-42", True), ("bad id with spaces", False), ("x" * 65, False)])
@pytest_twisted.ensureDeferred
async def test_request_ids_are_echoed_when_sane_by_both_paths(proxy, given, echoed):
    served, hits, _ = await proxy()
    port = served.port.getHost().port
    data = rawhttp.request("GET", TARGETS["info"][0], {"X-Request-Id": given})
    full, hit = await deferToThread(ask, port, data + rawhttp.request("GET", TARGETS["info"][0], {
        "X-Request-Id": given, "Connection": "close"}))
    assert hits.answered == 1
    for answer in (full, hit):
        assert (answer.headers["x-request-id"] == given) is echoed
        assert 1 <= len(answer.headers["x-request-id"]) <= 64


@pytest_twisted.ensureDeferred
async def test_basic_auth_applies_to_hits(proxy):
    served, hits, _ = await proxy(basic_auth=("builder", "s3cret"))
    port = served.port.getHost().port
    target = TARGETS["info"][0]
    good = {"Authorization": "Basic YnVpbGRlcjpzM2NyZXQ="}  # builder:s3cret
    bad = {"Authorization": "Basic YnVpbGRlcjp3cm9uZw=="}  # builder:wrong
    assert (await deferToThread(rawhttp.get, port, target, "GET", good)).status == 200
    for headers in ({}, bad, {"Authorization": "Bearer x"}):
        answer = await deferToThread(rawhttp.get, port, target, "GET", headers)
        assert answer.status == 401 and answer.body != INFO
    answer = await deferToThread(rawhttp.get, port, target, "GET", good)
    assert (answer.status, answer.body, hits.answered) == (200, INFO, 1)


@pytest_twisted.ensureDeferred
async def test_path_prefix_applies_to_hits(proxy):
    served, hits, _ = await proxy(path_prefix="/go/proxy")
    port = served.port.getHost().port
    for _ in range(2):
        answer = await deferToThread(rawhttp.get, port, "/go/proxy" + TARGETS["zip"][0])
        assert (answer.status, answer.body) == (200, ZIP)
    assert hits.answered == 1
    assert (await deferToThread(rawhttp.get, port, TARGETS["zip"][0])).status == 404


@pytest_twisted.ensureDeferred
async def test_a_zip_deleted_under_the_hit_path_is_not_served(proxy):
    served, hits, storage = await proxy()
    port = served.port.getHost().port
    assert (await deferToThread(rawhttp.get, port, TARGETS["zip"][0])).body == ZIP
    await storage.delete(M, "v1.0.0")
    answer = await deferToThread(rawhttp.get, port, TARGETS["zip"][0])
    assert answer.status == 404 and hits.answered == 0


@pytest_twisted.ensureDeferred
async def test_a_zip_deleted_while_the_hit_path_holds_it_open_is_not_served_after_the_link_check(proxy):
    """The hit path keeps remembered zips open; within LINK_CHECK of its deletion the full path answers."""
    served, hits, storage = await proxy()
    port = served.port.getHost().port
    for _ in range(2):
        assert (await deferToThread(rawhttp.get, port, TARGETS["zip"][0])).body == ZIP
    assert hits.answered == 1  # the file is open now
    await storage.delete(M, "v1.0.0")
    await deferLater(reactor, LINK_CHECK * 2, lambda: None)
    answer = await deferToThread(rawhttp.get, port, TARGETS["zip"][0])
    assert answer.status == 404 and hits.answered == 1


@pytest_twisted.ensureDeferred
async def test_hits_are_counted_and_logged(proxy):
    served, hits, _ = await proxy()
    port = served.port.getHost().port
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(3):
            await deferToThread(rawhttp.get, port, TARGETS["mod"][0], "GET", {"User-Agent": "Go-http-client/1.1"})
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if e.get("log_namespace") == "athens.access"]
    assert [(e["code"], e["size"], e["cache"], e["module"], e["version"], e["user_agent"]) for e in lines] == [
        (200, len(MOD), "hit", M, "v1.0.0", "Go-http-client/1.1")] * 3
    _, exposition = hits.metrics.exposition()
    assert b'athens_requests_total{code="200",endpoint="mod"} 3.0' in exposition
    assert b'athens_cache_total{result="hit"} 3.0' in exposition


async def _big_zip_remembered(served, storage) -> tuple[int, str, bytes]:
    """A 24 MiB zip (more than socket buffers hold) that the hit path now answers: port, target, bytes."""
    big = module_zip(M, "v1.1.0", {f"b{i}.go": os.urandom(1 << 20) for i in range(24)})
    await storage.save(M, "v1.1.0", INFO.replace(b"v1.0.0", b"v1.1.0"), MOD, once(big))
    port = served.port.getHost().port
    target = f"/{M}/@v/v1.1.0.zip"
    assert (await deferToThread(rawhttp.get, port, target)).body == big  # remembered
    return port, target, big


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_during_a_sendfile_is_logged_and_harms_nothing(proxy, tmp_path):
    served, hits, storage = await proxy()
    port, target, big = await _big_zip_remembered(served, storage)

    def leave_early() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(rawhttp.request("GET", target))
            s.recv(1000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        await deferToThread(leave_early)
        from twisted.internet import reactor
        from tests.test_stream_through import until

        await until(lambda: any(e.get("log_namespace") == "athens.access" for e in events), reactor)
        assert (await deferToThread(rawhttp.get, port, target)).body == big  # and the next client is served
    finally:
        globalLogPublisher.removeObserver(events.append)
    line = next(e for e in events if e.get("log_namespace") == "athens.access")
    assert line["cache"] == "hit" and line["broken"] == "client left" and line["size"] < len(big), line
    assert not [e for e in events if e.get("log_failure") is not None or e.get("log_level") is not None
                and e["log_level"].name in ("error", "critical")]


@pytest_twisted.ensureDeferred
async def test_answers_cleared_during_a_sendfile_leave_it_whole_and_then_close_the_file(proxy):
    """Hits share one descriptor per zip: a clear (a delete somewhere) closes it only when the last send ends."""
    import threading

    served, hits, storage = await proxy()
    port, target, big = await _big_zip_remembered(served, storage)
    path = hits.answers.get(target.encode()).path
    started, cleared = threading.Event(), threading.Event()

    def read_slowly() -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(rawhttp.request("GET", target, {"Connection": "close"}))
            data = s.recv(1000)
            started.set()
            assert cleared.wait(10)
            while chunk := s.recv(1 << 16):
                data += chunk
        return data

    def open_here() -> bool:
        return any(os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(path) for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    reading = deferToThread(read_slowly)
    for _ in range(200):
        if started.is_set():
            break
        await deferLater(reactor, 0.05, lambda: None)
    assert hits.answered == 1 and open_here()
    hits.answers.clear()
    cleared.set()
    (answer,) = rawhttp.parse(await reading)
    assert answer.body == big
    assert not open_here()


@pytest_twisted.ensureDeferred
async def test_the_filter_and_passthrough_decide_before_anything_is_remembered(tmp_path):
    """A filtered module is refused every time, a passthrough module relayed every time; others become hits."""
    from twisted.internet import reactor
    from twisted.internet.task import Clock
    from twisted.web.server import Site

    from athens.fetch.testing import FakeFetcher
    from athens.fetch.upstream import make_pool
    from athens.filter import parse_filter
    from athens.listcache import ListCache
    from athens.origin import Origin
    from athens.policy import DownloadPolicy, Mode, Rule
    from athens.stash import Stash
    from tests.test_hostile import ERRORS, NormalisingUpstream

    upstream = NormalisingUpstream()
    port = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
    storage = DiskStorage(str(tmp_path / "store"))
    for module in (M, "example.com/blocked", ERRORS):
        await storage.save(module, "v1.0.0", INFO, f"module {module}\n".encode(), once(module_zip(module, "v1.0.0")))
    fetcher = FakeFetcher()
    policy = DownloadPolicy(Mode.SYNC, "", (Rule(ERRORS, Mode.PASSTHROUGH, f"http://127.0.0.1:{port.getHost().port}"),))
    pool = make_pool(reactor)
    origin = Origin(fetcher, Stash(fetcher, storage), ListCache(fetcher, Clock()), policy,
                    parse_filter("- example.com/blocked\n"), http_pool=pool)
    served = serve(make_site(storage, None, origin))
    try:
        number = served.port.getHost().port
        for _ in range(2):
            relayed = await deferToThread(rawhttp.get, number, f"/{ERRORS}/@v/v0.9.1.mod")
            assert (relayed.status, relayed.body) == (200, upstream.files[f"/{ERRORS}/@v/v0.9.1.mod"])
            assert relayed.headers["cache-control"] == "no-store"  # kept out of every cache, in front too
            assert (await deferToThread(rawhttp.get, number, "/example.com/blocked/@v/v1.0.0.info")).status == 403
            assert (await deferToThread(rawhttp.get, number, TARGETS["info"][0])).status == 200
        assert served.port.factory.hits.answered == 1  # only the second .info of the module neither rule names
        assert upstream.seen == [f"/{ERRORS}/@v/v0.9.1.mod"] * 2  # relayed both times, the store never asked
    finally:
        await served.close()
        await pool.closeCachedConnections()
        await port.stopListening()
