"""
The organisation's checksum database, served in process over loopback: what it logs and when,
what it refuses, how a lookup fills, and that what it serves proves itself (tiles, tree heads).
"""

from __future__ import annotations

import base64
import json

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred, gatherResults, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.web.server import Site

from athens.fetch.testing import FakeFetcher
from athens.fetch.upstream import make_pool
from athens.listcache import ListCache
from athens.metrics import Metrics
from athens.origin import Origin
from athens.policy import parse_download_file
from athens.stash import Stash
from athens.storage.memory import MemoryStorage
from athens.sumdb import (
    ChecksumMismatch,
    ChecksumVerifier,
    MemoryLogStore,
    OwnSumDB,
    OwnSumDBResource,
    SignerKey,
    SumDBProxy,
    SumLog,
    go_mod_hash,
    go_sum_record,
    open_note,
    parse_key,
)
from athens.sumdb._tlog import (
    Tile,
    check_record,
    hash_from_tile,
    parse_record,
    parse_tree,
    record_hash,
    record_proof,
    record_proof_indexes,
    stored_hash_index,
    tile_for_index,
    tree_hash,
    tree_indexes,
)
from athens.web.app import make_site
from tests.inprocess import Served, serve
from tests.sumdb.test_verifier import FakeSumDB, make_key, record
from tests.test_stash_and_lists import module_zip

NAME = "sum.corp.test"
PRIVATE = "example.com/corp/lib"
LATER = "example.com/corp/later"
NEVER = "example.com/corp/never"
PUBLIC = "example.com/pub"
UNKNOWN = "example.com/unknown"


def zip_hash_of(tmp_path, module: str, version: str, data: bytes) -> str:
    from athens.modzip import check_zip

    path = tmp_path / f"h-{abs(hash((module, version, data)))}.zip"
    path.write_bytes(data)
    return check_zip(str(path), module, version)


class SmallFetcher(FakeFetcher):
    """An upstream proxy: it hands out a version's go.mod alone, too."""

    def small(self, module: str, version: str, kind: str):
        mod, _ = self.modules[(module, version)]
        info = json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()
        return succeed(mod if kind == "mod" else info)


@pytest_twisted.async_yield_fixture
async def world(tmp_path):
    """A proxy with its own database; public modules are confirmed by an upstream database on loopback."""
    from twisted.internet import reactor

    fetcher = SmallFetcher()
    for module in (PRIVATE, LATER, NEVER, PUBLIC, UNKNOWN):
        fetcher.add(module, "v1.0.0", module_zip(module, "v1.0.0"))
    fetcher.add(PUBLIC, "v1.1.0", module_zip(PUBLIC, "v1.1.0"))
    mod = f"module {PUBLIC}\n".encode()
    up_private, up_vkey = make_key("sum.upstream.test")
    upstream_records = {
        f"{PUBLIC}@v1.0.0": record(PUBLIC, "v1.0.0", zip_hash_of(tmp_path, PUBLIC, "v1.0.0",
                                                                  module_zip(PUBLIC, "v1.0.0")), mod),
        f"{PUBLIC}@v1.1.0": record(PUBLIC, "v1.1.0", "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", mod),
    }
    upstream_db = FakeSumDB(up_private, up_vkey, upstream_records)
    up_port = reactor.listenTCP(0, Site(upstream_db), interface="127.0.0.1")
    pool = make_pool(reactor)
    verifier = ChecksumVerifier(f"http://127.0.0.1:{up_port.getHost().port}", parse_key(up_vkey), pool, reactor,
                                ["example.com/corp"])  # (as the service builds it: private modules are not asked)
    signer = SignerKey.generate(NAME)
    metrics = Metrics()
    own = OwnSumDB(SumLog(signer, MemoryLogStore()), ("example.com/corp",), verifier, metrics)
    storage = MemoryStorage()
    policy = parse_download_file(f'download "{LATER}" {{ mode = "async" }}\ndownload "{NEVER}" {{ mode = "none" }}\n')
    origin = Origin(fetcher, Stash(fetcher, storage, verifier=verifier, metrics=metrics, own=own),
                    ListCache(fetcher, Clock()), policy)
    sumdb = SumDBProxy([], pool, reactor, own=OwnSumDBResource(own, storage, origin))
    served = serve(make_site(storage, None, origin, 301, sumdb, metrics=metrics))
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield World(served, fetcher, storage, own, origin, upstream_db, signer, metrics, events)
    globalLogPublisher.removeObserver(events.append)
    await served.close()
    await pool.closeCachedConnections()
    await up_port.stopListening()


class World:
    def __init__(self, served: Served, fetcher, storage, own, origin, upstream_db, signer, metrics, events):
        self.served, self.fetcher, self.storage, self.own = served, fetcher, storage, own
        self.origin, self.upstream_db, self.signer, self.metrics, self.events = (origin, upstream_db, signer,
                                                                                 metrics, events)

    async def get(self, path: str) -> tuple[int, bytes, object]:
        return await self.served.get(f"/sumdb/{NAME}/{path}")

    async def lookup(self, module: str, version: str) -> tuple[int, bytes]:
        code, data, _ = await self.get(f"lookup/{module}@{version}")
        return code, data

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def verified(world: World, answer: bytes) -> tuple[int, bytes]:
    """Check a lookup answer as the go command does, with tiles fetched from the server: (id, record text)."""
    record_id, text, note = parse_record(answer)
    tree = parse_tree(open_note(note, world.signer.verifier()))
    assert record_id < tree.n

    async def stored(index: int) -> bytes:
        tile = tile_for_index(8, index)
        full = Tile(8, tile.level, tile.n, min(256, (tree.n >> (8 * tile.level)) - (tile.n << 8)))
        code, data, _ = await world.get(full.path())
        assert code == 200, full.path()
        return hash_from_tile(full, data, index)

    assert tree_hash(tree.n, [await stored(i) for i in tree_indexes(tree.n)]) == tree.hash
    assert await stored(stored_hash_index(0, record_id)) == record_hash(text)
    proof = record_proof(tree.n, record_id, [await stored(i) for i in record_proof_indexes(tree.n, record_id)])
    check_record(proof, tree.n, tree.hash, record_id, record_hash(text))
    return record_id, text


@pytest_twisted.ensureDeferred
async def test_a_private_module_is_logged_as_first_seen(world, tmp_path):
    assert (await world.get("supported"))[0] == 200
    code, answer = await world.lookup(PRIVATE, "v1.0.0")
    assert code == 200, answer
    record_id, text = await verified(world, answer)
    zip_hash = zip_hash_of(tmp_path, PRIVATE, "v1.0.0", module_zip(PRIVATE, "v1.0.0"))
    assert text == go_sum_record(PRIVATE, "v1.0.0", zip_hash, go_mod_hash(f"module {PRIVATE}\n".encode()))
    assert await world.storage.exists(PRIVATE, "v1.0.0")  # the lookup filled it (sync mode)
    assert world.upstream_db.lookups == 0  # a private module's name never leaves the proxy
    assert world.count("athens_sumdb_records_total", kind="private") == 1
    # the zip the client then asks for is the one logged
    code, data, _ = await world.served.get(f"/{PRIVATE}/@v/v1.0.0.zip")
    assert code == 200 and zip_hash_of(tmp_path, PRIVATE, "v1.0.0", data) == zip_hash


@pytest_twisted.ensureDeferred
async def test_a_public_module_is_logged_once_the_upstream_database_agrees(world):
    code, answer = await world.lookup(PUBLIC, "v1.0.0")
    assert code == 200, answer
    await verified(world, answer)
    assert world.upstream_db.lookups == 1  # checked once: the stash's check counts for the log too
    assert world.count("athens_sumdb_records_total", kind="public") == 1
    code, answer = await world.lookup(PUBLIC, "v1.1.0")  # the upstream database has other hashes
    assert code == 502 and b"checksum mismatch" in answer
    assert not await world.storage.exists(PUBLIC, "v1.1.0")
    assert await world.own.log.lookup(PUBLIC, "v1.1.0") is None
    assert world.count("athens_checksum_refusals_total", database="upstream") == 1
    code, answer = await world.lookup(UNKNOWN, "v1.0.0")
    assert code == 404 and b"not in the checksum database" in answer


@pytest_twisted.ensureDeferred
async def test_a_moved_tag_is_refused_and_the_logged_hashes_stay(world):
    code, first = await world.lookup(PRIVATE, "v1.0.0")
    assert code == 200
    await world.storage.delete(PRIVATE, "v1.0.0")  # deleted from the cache (gc, an operator)...
    moved = module_zip(PRIVATE, "v1.0.0", {"m.go": b"package m\n\nconst Evil = 1\n"})
    world.fetcher.add(PRIVATE, "v1.0.0", moved)  # ...and the tag moved at the origin
    code, data, _ = await world.served.get(f"/{PRIVATE}/@v/v1.0.0.zip")
    assert code == 502 and b"checksum mismatch with the checksum database sum.corp.test" in data
    assert not await world.storage.exists(PRIVATE, "v1.0.0")
    assert world.count("athens_checksum_refusals_total", database="own") == 1
    security = [e for e in world.events if e.get("security") and "moved tag" in e.get("log_format", "")]
    assert len(security) == 1 and security[0]["module"] == PRIVATE
    code, again = await world.lookup(PRIVATE, "v1.0.0")
    assert (code, parse_record(again)[:2]) == (200, parse_record(first)[:2])  # hashes never change once logged


@pytest_twisted.ensureDeferred
async def test_a_go_mod_served_alone_must_agree_with_the_log(world):
    assert (await world.lookup(PRIVATE, "v1.0.0"))[0] == 200
    await world.own.check_mod(PRIVATE, "v1.0.0", f"module {PRIVATE}\n".encode())
    with pytest.raises(ChecksumMismatch):
        await world.own.check_mod(PRIVATE, "v1.0.0", f"module {PRIVATE}\n\nrequire evil.example/x v1.0.0\n".encode())
    await world.own.check_mod(LATER, "v1.0.0", b"anything")  # not logged: nothing to agree with
    # the cold path hands out a go.mod alone: it too must be the one logged
    await world.storage.delete(PRIVATE, "v1.0.0")
    world.fetcher.add(PRIVATE, "v1.0.0", module_zip(PRIVATE, "v1.0.0"), b"module example.com/corp/lib\n\ngo 1.99\n")
    code, data, _ = await world.served.get(f"/{PRIVATE}/@v/v1.0.0.mod")
    assert code == 502 and b"checksum mismatch" in data


@pytest_twisted.ensureDeferred
async def test_with_verify_checksums_off_the_log_still_asks_the_upstream_database(world):
    world.origin.stash.verifier = None  # VerifyChecksums = false: the store alone would take anything
    code, answer = await world.lookup(PUBLIC, "v1.1.0")
    assert code == 502 and b"checksum mismatch" in answer
    assert await world.own.log.lookup(PUBLIC, "v1.1.0") is None
    assert world.count("athens_checksum_refusals_total", database="upstream") == 1
    code, answer = await world.lookup(PUBLIC, "v1.0.0")
    assert code == 200 and world.upstream_db.lookups == 2


@pytest_twisted.ensureDeferred
async def test_without_an_upstream_database_a_public_module_is_stored_but_not_vouched_for(world):
    world.origin.stash.verifier = None
    world.own.upstream = None
    code, answer = await world.lookup(PUBLIC, "v1.0.0")
    assert code == 404 and b"no upstream checksum database is configured" in answer
    assert await world.storage.exists(PUBLIC, "v1.0.0") and await world.own.log.store.size() == 0


@pytest_twisted.ensureDeferred
async def test_lookups_fill_under_the_download_mode(world):
    code, answer = await world.lookup(NEVER, "v1.0.0")
    assert code == 404 and b"download mode (none) does not fetch it" in answer
    assert world.fetcher.count("download", NEVER) == 0
    code, answer = await world.lookup(LATER, "v1.0.0")
    assert code == 404 and b"being fetched" in answer
    await world.origin.stash.flights.settled()
    code, answer = await world.lookup(LATER, "v1.0.0")
    assert code == 200
    await verified(world, answer)
    assert world.fetcher.count("download", LATER) == 1


@pytest_twisted.ensureDeferred
async def test_a_version_stored_before_the_log_is_logged_from_storage(world):
    data = module_zip(PRIVATE, "v0.9.0")

    async def chunks():
        yield data

    await world.storage.save(PRIVATE, "v0.9.0", b'{"Version": "v0.9.0"}', f"module {PRIVATE}\n".encode(), chunks())
    code, answer = await world.lookup(PRIVATE, "v0.9.0")
    assert code == 200 and world.fetcher.count("download", PRIVATE) == 0
    await verified(world, answer)


@pytest_twisted.ensureDeferred
async def test_concurrent_lookups_of_a_cold_version_fetch_and_log_it_once(world):
    answers = await gatherResults([ensureDeferred(world.lookup(PRIVATE, "v1.0.0")) for _ in range(8)])
    assert {code for code, _ in answers} == {200} and len({a for _, a in answers}) == 1
    assert world.fetcher.count("download", PRIVATE) == 1 and await world.own.log.store.size() == 1


@pytest_twisted.ensureDeferred
async def test_tiles_latest_and_bad_requests(world):
    for module in (PRIVATE, PUBLIC):
        assert (await world.lookup(module, "v1.0.0"))[0] == 200
    code, latest, response = await world.get("latest")
    assert code == 200 and response.headers.getRawHeaders("content-type") == ["text/plain; charset=UTF-8"]
    assert parse_tree(open_note(latest, world.signer.verifier())).n == 2
    code, tile, response = await world.get("tile/8/0/000.p/2")
    assert code == 200 and len(tile) == 64
    assert response.headers.getRawHeaders("content-type") == ["application/octet-stream"]
    code, data, _ = await world.get("tile/8/data/000.p/2")
    assert code == 200 and data.count(b"\n\n") == 2 and data.endswith(b"\n\n")
    assert record_hash(data.split(b"\n\n")[0] + b"\n") == tile[:32]
    for path, want in [("tile/8/0/000.p/3", 404), ("tile/8/0/000", 404), ("tile/8/1/000.p/1", 404),
                       ("tile/4/0/000.p/2", 404), ("tile/8/0/000.p/02", 400), ("tile/8/x/000", 400),
                       ("lookup/example.com/corp/lib@v1.0", 400), ("lookup/example.com/corp/lib@latest", 400),
                       ("lookup/Example.com/x@v1.0.0", 400), ("nothing", 404)]:
        assert (await world.get(path))[0] == want, path
    assert base64.b64decode(latest.split(b"\n")[2]) == parse_tree(open_note(latest, world.signer.verifier())).hash
