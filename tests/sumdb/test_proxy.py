"""The checksum database proxy against a test database: byte for byte, tiles cached, private modules refused."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.web.resource import Resource
from twisted.web.server import Site

from athens.fetch.upstream import make_pool
from athens.storage.memory import MemoryStorage
from athens.web.app import make_site
from athens.sumdb import SumDBProxy, TileCache
from tests.inprocess import serve

#: Every protocol answer here, from the full path and again from the hit path.
pytestmark = pytest.mark.usefixtures("both_paths")

LOOKUP = b"1234\nexample.com/pub v1.0.0 h1:AAAA=\nexample.com/pub v1.0.0/go.mod h1:BBBB=\n\ngo.sum database tree\n5\n\xe2\x80\x94 sig\n"
TILE = bytes(range(256)) * 32


class FakeChecksumDatabase(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def render_GET(self, request):  # noqa: N802
        path = request.path.decode()
        self.requests.append(path)
        if path.startswith("/lookup/example.com/pub@"):
            request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
            return LOOKUP
        if path.startswith("/tile/"):
            request.setHeader(b"content-type", b"application/octet-stream")
            return TILE + path.encode()
        if path == "/latest":
            request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
            return b"go.sum database tree\n%d\n" % len(self.requests)
        request.setResponseCode(410)
        request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
        return b"not found: gone\n"


@pytest_twisted.async_yield_fixture(params=["disk", "memory"])
async def proxied(tmp_path, request):
    """Full tiles kept under the disk root, or (other storages) in a bounded memory LRU."""
    from twisted.internet import reactor

    database = FakeChecksumDatabase()
    port = reactor.listenTCP(0, Site(database), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    pool = make_pool(reactor)
    tiles = TileCache(str(tmp_path / "tiles") if request.param == "disk" else "")
    sumdb = SumDBProxy([url], pool, reactor, ["example.com/private"], tiles)
    served = serve(make_site(MemoryStorage(), None, None, 301, sumdb))
    yield served, database, url.removeprefix("http://")
    await served.close()
    await pool.closeCachedConnections()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_supported_only_for_configured_databases(proxied):
    served, _, name = proxied
    assert (await served.get(f"/sumdb/{name}/supported"))[0] == 200
    assert (await served.get("/sumdb/sum.golang.org/supported"))[0] == 404
    assert (await served.get("/sumdb/sum.golang.org/latest"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_lookup_passes_through_byte_for_byte(proxied):
    served, database, name = proxied
    code, data, response = await served.get(f"/sumdb/{name}/lookup/example.com/pub@v1.0.0")
    assert (code, data) == (200, LOOKUP)
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=UTF-8"]
    code, data, _ = await served.get(f"/sumdb/{name}/lookup/example.com/unknown@v1.0.0")
    assert (code, data) == (410, b"not found: gone\n")


@pytest_twisted.ensureDeferred
async def test_no_sum_patterns_are_refused(proxied):
    served, database, name = proxied
    code, data, _ = await served.get(f"/sumdb/{name}/lookup/example.com/private/lib@v1.0.0")
    assert code == 403 and b"NoSumPatterns" in data
    assert not any("private" in r for r in database.requests)


@pytest_twisted.ensureDeferred
async def test_full_tiles_are_cached_partial_tiles_and_latest_are_not(proxied, tmp_path):
    served, database, name = proxied
    for _ in range(3):
        code, data, response = await served.get(f"/sumdb/{name}/tile/8/0/x001/234")
        assert (code, data) == (200, TILE + b"/tile/8/0/x001/234")
    assert database.requests.count("/tile/8/0/x001/234") == 1  # on disk or in memory: asked once
    for _ in range(2):
        assert (await served.get(f"/sumdb/{name}/tile/8/0/005.p/7"))[0] == 200
        await served.get(f"/sumdb/{name}/latest")
    assert database.requests.count("/tile/8/0/005.p/7") == 2
    assert database.requests.count("/latest") == 2


@pytest_twisted.ensureDeferred
async def test_odd_paths_never_reach_the_database(proxied):
    served, database, name = proxied
    for path in ("tile/8/0/../../etc", "lookup", "other", "tile/x/0/000"):
        assert (await served.get(f"/sumdb/{name}/{path}"))[0] == 404
    assert database.requests == []
