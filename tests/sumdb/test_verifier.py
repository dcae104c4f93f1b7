"""Fetched modules checked against a (test) checksum database before they are stored."""

from __future__ import annotations

import base64
import os
import hashlib

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.web.resource import Resource
from twisted.web.server import Site

from athens.sumdb import (
    KNOWN_KEYS,
    ChecksumMismatch,
    ChecksumVerifier,
    go_mod_hash,
    parse_key,
    verifier_key,
    verify_note,
)
from athens.fetch.interface import OriginNotFound
from athens.fetch.testing import FakeFetcher
from athens.fetch.upstream import make_pool
from athens.modzip import check_zip
from athens.stash import Stash
from athens.storage.memory import MemoryStorage
from tests.test_stash_and_lists import module_zip

M = "example.com/m"
NAME = "sum.test"


def make_key(name: str = NAME) -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    raw = b"\x01" + private.public_key().public_bytes_raw()
    key_hash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    return private, f"{name}+{key_hash.hex()}+{base64.b64encode(raw).decode()}"


def signed_note(private: Ed25519PrivateKey, vkey: str, text: bytes) -> bytes:
    key = parse_key(vkey)
    signature = base64.b64encode(key.hash + private.sign(text)).decode()
    return text + b"\n" + f"\u2014 {key.name} {signature}\n".encode()


class FakeSumDB(Resource):
    isLeaf = True

    def __init__(self, private, vkey, records: dict[str, bytes]) -> None:
        super().__init__()
        self.private, self.vkey, self.records = private, vkey, records
        self.lookups = 0

    def render_GET(self, request):  # noqa: N802
        self.lookups += 1
        target = request.path.decode().removeprefix("/lookup/")
        if target not in self.records:
            request.setResponseCode(404)
            return b"not found\n"
        note = signed_note(self.private, self.vkey, b"go.sum database tree\n42\nAAAA\n")
        return b"42\n" + self.records[target] + b"\n" + note


def record(module: str, version: str, zip_hash: str, mod: bytes) -> bytes:
    return f"{module} {version} {zip_hash}\n{module} {version}/go.mod {go_mod_hash(mod)}\n".encode()


@pytest_twisted.async_yield_fixture
async def sumdb(tmp_path):
    from twisted.internet import reactor

    private, vkey = make_key()
    good_zip = tmp_path / "good.zip"
    good_zip.write_bytes(module_zip(M, "v1.0.0"))
    mod = f"module {M}\n".encode()
    records = {f"{M}@v1.0.0": record(M, "v1.0.0", check_zip(str(good_zip), M, "v1.0.0"), mod),
               f"{M}@v1.1.0": record(M, "v1.1.0", "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", mod)}
    db = FakeSumDB(private, vkey, records)
    port = reactor.listenTCP(0, Site(db), interface="127.0.0.1")
    pool = make_pool(reactor)

    def verifier(key: str = vkey, patterns=()) -> ChecksumVerifier:
        return ChecksumVerifier(f"http://127.0.0.1:{port.getHost().port}", parse_key(key), pool, reactor, patterns)

    yield verifier, db
    await pool.closeCachedConnections()
    await port.stopListening()


def upstream_fetcher() -> FakeFetcher:
    fetcher = FakeFetcher()
    for v in ("v1.0.0", "v1.1.0", "v1.2.0"):
        fetcher.add(M, v, module_zip(M, v))
    return fetcher


@pytest_twisted.ensureDeferred
async def test_a_module_matching_the_database_is_stored(sumdb):
    verifier, db = sumdb
    storage = MemoryStorage()
    await Stash(upstream_fetcher(), storage, verifier=verifier()).stash(M, "v1.0.0")
    assert await storage.exists(M, "v1.0.0") and db.lookups == 1


@pytest_twisted.ensureDeferred
async def test_a_mismatch_is_refused_and_not_stored(sumdb):
    verifier, _ = sumdb
    storage = MemoryStorage()
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        await Stash(upstream_fetcher(), storage, verifier=verifier()).stash(M, "v1.1.0")
    assert not await storage.exists(M, "v1.1.0")


@pytest_twisted.ensureDeferred
async def test_a_note_signed_by_another_key_is_refused(sumdb):
    verifier, _ = sumdb
    _, other = make_key()
    storage = MemoryStorage()
    with pytest.raises(ChecksumMismatch, match="not signed by"):
        await Stash(upstream_fetcher(), storage, verifier=verifier(other)).stash(M, "v1.0.0")
    assert not await storage.exists(M, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_unknown_to_the_database_is_not_found_and_no_sum_patterns_skip_it(sumdb):
    verifier, db = sumdb
    storage = MemoryStorage()
    with pytest.raises(OriginNotFound, match="not in the checksum database"):
        await Stash(upstream_fetcher(), storage, verifier=verifier()).stash(M, "v1.2.0")
    before = db.lookups
    await Stash(upstream_fetcher(), storage, verifier=verifier(patterns=["example.com"])).stash(M, "v1.2.0")
    assert await storage.exists(M, "v1.2.0") and db.lookups == before


def test_the_built_in_key_and_tampered_notes():
    assert verifier_key("sum.golang.org", ()) == parse_key(KNOWN_KEYS["sum.golang.org"])
    assert verifier_key("elsewhere", ()) is None
    private, vkey = make_key()
    note = signed_note(private, vkey, b"tree\n1\n")
    assert verify_note(note, parse_key(vkey)) == b"tree\n1\n"
    with pytest.raises(ChecksumMismatch):
        verify_note(note.replace(b"tree\n1", b"tree\n2"), parse_key(vkey))
    with pytest.raises(ValueError, match="key hash"):
        parse_key(vkey.replace(vkey.split("+")[1], "00000000"))


@pytest.mark.parametrize("settings, starts", [
    ({}, False),  # a database with no known key: refused, never checked without its signature
    ({"ATHENS_SUM_DB_KEYS": "KEY"}, True),
    ({"ATHENS_VERIFY_CHECKSUMS": "false"}, True),
])
def test_verification_needs_the_key_of_its_database(settings, starts):
    from twisted.internet.task import Clock

    from athens import config as athens_config
    from athens.service import build_origin

    _, vkey = make_key("sum.example.com")
    environ = {"ATHENS_SUM_DBS": "https://sum.example.com",
               **{k: v.replace("KEY", vkey) for k, v in settings.items()}}
    config = athens_config.load(path=os.devnull, environ=environ)
    if starts:
        origin = build_origin(config, MemoryStorage(), Clock())
        assert (origin.stash.verifier is not None) == ("ATHENS_SUM_DB_KEYS" in settings)
        if origin.stash.verifier is not None:
            assert origin.stash.verifier.key == parse_key(vkey)
    else:
        with pytest.raises(athens_config.ConfigError, match="no key is known for the checksum database "
                                                            "sum.example.com.*SumDBKeys"):
            build_origin(config, MemoryStorage(), Clock())



@pytest_twisted.ensureDeferred
async def test_a_go_mod_that_differs_is_refused_even_when_the_zip_matches(sumdb, tmp_path):
    """A mutant that skipped the go.mod comparison survived the suite: this kills it."""
    verifier, _ = sumdb
    good_zip = tmp_path / "again.zip"
    good_zip.write_bytes(module_zip(M, "v1.0.0"))
    zip_hash = check_zip(str(good_zip), M, "v1.0.0")
    await verifier().verify(M, "v1.0.0", zip_hash, f"module {M}\n".encode())  # both agree: accepted
    with pytest.raises(ChecksumMismatch, match="go.mod: checksum mismatch"):
        await verifier().verify(M, "v1.0.0", zip_hash, f"module {M}\n\nrequire evil.example/x v1.0.0\n".encode())
