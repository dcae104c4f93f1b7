"""
A cold ``.mod`` or ``.info`` from an upstream is answered as soon as it is
known: the zip (which the go command never asks for, for much of a module
graph) is fetched when it is asked for, and then the version is stored.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

from athens import config as athens_config
from athens.service import build_origin
from athens.storage.disk import DiskStorage
from athens.storage.interface import NotFound
from athens.web.app import make_site
from tests import rawhttp
from tests.sumdb.test_verifier import FakeSumDB, make_key, record
from tests.inprocess import serve
from tests.test_hostile import ERRORS, NormalisingUpstream

V = "v0.9.1"


async def _proxy(tmp_path, upstream: NormalisingUpstream, extra: dict[str, str], path_prefix: str = ""):
    from twisted.internet import reactor

    port = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
    (tmp_path / "work").mkdir(parents=True, exist_ok=True)
    config = athens_config.load(path=os.devnull, environ={
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY=http://127.0.0.1:{port.getHost().port}",
        "ATHENS_GOGET_DIR": str(tmp_path / "work"), **extra})
    storage = DiskStorage(str(tmp_path / "store"))
    origin = build_origin(config, storage, reactor)
    served = serve(make_site(storage, None, origin, 301, None, path_prefix))

    async def close() -> None:
        await served.close()
        await origin.http_pool.closeCachedConnections()
        await port.stopListening()

    return served.port.getHost().port, storage, close


async def _has_mod(storage) -> bool:
    try:
        await storage.go_mod(ERRORS, V)
        return True
    except NotFound:
        return False


@pytest_twisted.ensureDeferred
async def test_go_mod_and_info_come_at_once_and_the_zip_when_asked(tmp_path):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    upstream = NormalisingUpstream()
    port, storage, close = await _proxy(tmp_path, upstream, {"ATHENS_VERIFY_CHECKSUMS": "false"})
    saves = mock.patch.object(DiskStorage, "save_mod", autospec=True, side_effect=DiskStorage.save_mod)
    try:
        with saves as save_mod:
            for kind in ("mod", "info"):
                answer = await deferToThread(rawhttp.get, port, f"/{ERRORS}/@v/{V}.{kind}")
                assert (answer.status, answer.body) == (200, upstream.files[f"/{ERRORS}/@v/{V}.{kind}"])
            assert upstream.seen == [f"/{ERRORS}/@v/{V}.mod", f"/{ERRORS}/@v/{V}.info"], "no zip was fetched"
            assert await storage.list(ERRORS) == []
            for _ in range(500):  # kept go.mod-only, off the answer's path: other workers and restarts have it
                if await _has_mod(storage):
                    break
                await deferLater(reactor, 0.01, lambda: None)
            assert save_mod.call_count == 1, "the go.mod was kept once"
        assert await storage.go_mod(ERRORS, V) == upstream.files[f"/{ERRORS}/@v/{V}.mod"]
        assert not await storage.exists(ERRORS, V)
        answer = await deferToThread(rawhttp.get, port, f"/{ERRORS}/@v/{V}.zip")
        assert (answer.status, answer.body) == (200, upstream.files[f"/{ERRORS}/@v/{V}.zip"])
        for _ in range(500):  # the zip went to the client while it arrived: the store follows
            if await storage.exists(ERRORS, V):
                break
            await deferLater(reactor, 0.01, lambda: None)
        assert await storage.list(ERRORS) == [V]
        assert upstream.seen[2:] == [f"/{ERRORS}/@v/{V}.zip"], "the fill did not fetch .mod and .info again"
        seen = len(upstream.seen)
        assert (await deferToThread(rawhttp.get, port, f"/{ERRORS}/@v/{V}.mod")).status == 200
        assert len(upstream.seen) == seen, "answered from the cache"
    finally:
        await close()


@pytest_twisted.ensureDeferred
async def test_a_go_mod_alone_is_checked_against_the_checksum_database(tmp_path):
    from twisted.internet import reactor

    upstream = NormalisingUpstream()
    good_mod = upstream.files[f"/{ERRORS}/@v/{V}.mod"]
    db = FakeSumDB(None, None, {f"{ERRORS}@{V}": record(ERRORS, V, "h1:AAAA=", good_mod)})
    sumdb = reactor.listenTCP(0, Site(db), interface="127.0.0.1")
    db.private, db.vkey = make_key(f"127.0.0.1:{sumdb.getHost().port}")  # the database's name is its host
    settings = {"ATHENS_SUM_DBS": f"http://127.0.0.1:{sumdb.getHost().port}", "ATHENS_SUM_DB_KEYS": db.vkey}
    port, storage, close = await _proxy(tmp_path, upstream, settings)
    try:
        assert (await deferToThread(rawhttp.get, port, f"/{ERRORS}/@v/{V}.mod")).status == 200
        assert db.lookups == 1
        upstream.files[f"/{ERRORS}/@v/{V}.mod"] = b"module evil.example/x\n"  # the upstream turns
        storage2_port, _, close2 = await _proxy(tmp_path / "second", upstream, settings)
        try:
            answer = await deferToThread(rawhttp.get, storage2_port, f"/{ERRORS}/@v/{V}.mod")
            assert answer.status == 502 and b"checksum mismatch" in answer.body
        finally:
            await close2()
    finally:
        await close()
        await sumdb.stopListening()


@pytest_twisted.ensureDeferred
async def test_path_prefix_is_cut_from_upstream_paths(tmp_path):
    """The README's promise: under PathPrefix, upstreams are asked for the module's own path."""
    upstream = NormalisingUpstream()
    port, _, close = await _proxy(tmp_path, upstream, {"ATHENS_VERIFY_CHECKSUMS": "false"}, "/go/proxy")
    try:
        assert (await deferToThread(rawhttp.get, port, f"/go/proxy/{ERRORS}/@v/{V}.mod")).status == 200
        assert upstream.seen == [f"/{ERRORS}/@v/{V}.mod"]
    finally:
        await close()
