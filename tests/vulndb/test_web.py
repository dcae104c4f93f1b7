"""
``/vuln/`` as govulncheck reads it, and VulnPolicy on the protocol: deny answers 403 for a flagged
zip only, warn serves and logs and counts every download (the hit path never replays a flagged zip),
and a new database makes remembered zips be judged again.
"""

from __future__ import annotations

import gzip
import json

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from athens.metrics import Metrics
from athens.storage.disk import DiskStorage
from athens.vulndb.database import VulnDatabase
from athens.vulndb.policy import VulnPolicy
from athens.vulndb.snapshot import build
from athens.vulndb.store import MemoryVulnStore, State
from athens.web.app import make_site
from tests import rawhttp
from tests.inprocess import serve
from tests.streams import once
from tests.test_stash_and_lists import module_zip
from tests.vulndata import entry, tree

M = "github.com/athens-vuln/lib"
OTHER = "github.com/athens-vuln/other"
VULNS = tree([entry("GO-2024-0001", M, aliases=["CVE-2024-1"]),
              entry("GO-2024-0002", M, [{"introduced": "0"}], symbols=["Other"])])


def snapshot(files=VULNS):
    return build(files)


def install(database: VulnDatabase, snap) -> None:
    database.install(snap, State(snap.digest, snap.modified, database.clock.seconds(), "test"))


@pytest_twisted.async_yield_fixture
async def proxy(tmp_path):
    from twisted.internet import reactor

    started = []

    async def make(mode="off", patterns=(), ignore=(), snap=None):
        storage = DiskStorage(str(tmp_path / f"store{len(started)}"))
        for module, version in ((M, "v1.0.0"), (M, "v1.1.0"), (OTHER, "v1.0.0")):
            info = json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()
            await storage.save(module, version, info, f"module {module}\n".encode(),
                               once(module_zip(module, version, {"a.go": b"package a\n"})))
        metrics = Metrics()
        database = VulnDatabase(MemoryVulnStore(), reactor)
        if snap is not None:
            install(database, snap)
        policy = VulnPolicy(mode, database, tuple(patterns), frozenset(ignore), metrics)
        served = serve(make_site(storage, reactor, metrics=metrics, vulndb=database, vuln_policy=policy))
        started.append(served)
        return served, database, metrics

    yield make
    for served in started:
        await served.close()


def get(served, path, method="GET", **headers) -> rawhttp.RawResponse:
    return rawhttp.get(served.port.getHost().port, path, method, headers)


@pytest_twisted.ensureDeferred
async def test_the_database_in_the_layout_govulncheck_reads(proxy):
    served, database, _ = await proxy()
    answer = await deferToThread(get, served, "/vuln/index/modules.json.gz", "HEAD")
    assert answer.status == 503  # no copy yet
    assert "no copy yet" in (await deferToThread(get, served, "/readyz")).body.decode()
    snap = snapshot()
    install(database, snap)

    head = await deferToThread(get, served, "/vuln/index/modules.json.gz", "HEAD")
    assert head.status == 200 and head.headers["content-type"] == "application/gzip"
    for endpoint, data in VULNS.items():
        got = await deferToThread(get, served, f"/vuln/{endpoint}.json.gz")
        assert got.status == 200 and "content-encoding" not in got.headers  # a gzip file, inflated by govulncheck
        assert gzip.decompress(got.body) == data
        plain = await deferToThread(get, served, f"/vuln/{endpoint}.json")
        assert (plain.status, plain.body, plain.headers["content-type"]) == (200, data, "application/json")
        assert "content-encoding" not in plain.headers
    encoded = await deferToThread(get, served, "/vuln/ID/GO-2024-0001.json", **{"Accept-Encoding": "br, gzip"})
    assert encoded.headers["content-encoding"] == "gzip" and encoded.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(encoded.body) == VULNS["ID/GO-2024-0001"]
    refused = await deferToThread(get, served, "/vuln/ID/GO-2024-0001.json", **{"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers and refused.body == VULNS["ID/GO-2024-0001"]
    whole = await deferToThread(get, served, "/vuln/vulndb.zip")
    assert (whole.status, whole.body, whole.headers["content-type"]) == (200, snap.archive, "application/zip")
    for missing in ("/vuln/ID/GO-2099-0001.json.gz", "/vuln/ID/..%2Findex%2Fdb.json", "/vuln/index/other.json",
                    "/vuln/ID/GO-2024-0001.json.br"):
        assert (await deferToThread(get, served, missing)).status == 404, missing
    ready = (await deferToThread(get, served, "/readyz")).body.decode()
    assert ready.startswith("OK; vulnerability database: 2 entries, modified 2024-03-01T00:00:00Z, checked")


def events_of(module: str) -> tuple[list[dict], object]:
    events: list[dict] = []
    observer = lambda e: events.append(e) if e.get("module") == module and "vulns" in e else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    return events, observer


@pytest_twisted.ensureDeferred
async def test_deny_refuses_the_zip_of_a_flagged_version_only(proxy):
    served, _, metrics = await proxy("deny", snap=snapshot())
    events, observer = events_of(M)
    try:
        for method in ("GET", "HEAD"):
            refused = await deferToThread(get, served, f"/{M}/@v/v1.0.0.zip", method)
            assert refused.status == 403
        refused = await deferToThread(get, served, f"/{M}/@v/v1.0.0.zip")
    finally:
        globalLogPublisher.removeObserver(observer)
    message = refused.body.decode()
    assert message.startswith(f"forbidden: {M}@v1.0.0 has known vulnerabilities: ")
    assert "GO-2024-0001 (fixed in v1.1.0)" in message and "GO-2024-0002 (no fixed version)" in message
    assert [e["vulns"] for e in events] == [["GO-2024-0001", "GO-2024-0002"]] * 3
    assert metrics.vuln_policy.labels("deny")._value.get() == 3
    for path in (f"/{M}/@v/v1.0.0.info", f"/{M}/@v/v1.0.0.mod", f"/{OTHER}/@v/v1.0.0.zip"):
        assert (await deferToThread(get, served, path)).status == 200, path  # module graphs still resolve
    fixed = await deferToThread(get, served, f"/{M}/@v/v1.1.0.zip")
    assert fixed.status == 403 and "GO-2024-0002" in fixed.body.decode() and "0001" not in fixed.body.decode()


@pytest_twisted.ensureDeferred
async def test_warn_serves_and_judges_every_download_the_hit_path_included(proxy):
    served, _, metrics = await proxy("warn", snap=snapshot(tree([entry("GO-2024-0001", M)])))
    hits = served.port.factory.hits
    events, observer = events_of(M)
    try:
        for _ in range(3):
            answer = await deferToThread(get, served, f"/{M}/@v/v1.0.0.zip")
            assert answer.status == 200 and answer.body[:2] == b"PK"
            assert answer.headers["cache-control"] == "no-store"  # a cache in front must not skip the judging
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(events) == 3 and metrics.vuln_policy.labels("warn")._value.get() == 3
    assert hits.answered == 0 and hits.answers.get(f"/{M}/@v/v1.0.0.zip".encode()) is None
    for _ in range(2):  # a zip nothing flags is replayed by the hit path as usual
        answer = await deferToThread(get, served, f"/{M}/@v/v1.1.0.zip")
        assert (answer.status, answer.headers["cache-control"]) == (200, "public, max-age=31536000, immutable")
    assert hits.answered == 1


@pytest.mark.parametrize("mode", ["deny", "warn"])
@pytest_twisted.ensureDeferred
async def test_a_new_database_judges_remembered_zips_again(proxy, mode):
    served, database, metrics = await proxy(mode, snap=snapshot(tree([entry("GO-2024-0009", OTHER)])))
    hits = served.port.factory.hits
    target = f"/{M}/@v/v1.0.0.zip"
    for _ in range(2):
        assert (await deferToThread(get, served, target)).status == 200
    assert hits.answered == 1  # remembered, and replayed
    install(database, snapshot())
    assert hits.answers.get(target.encode()) is None
    answer = await deferToThread(get, served, target)
    assert answer.status == (403 if mode == "deny" else 200) and hits.answered == 1
    assert metrics.vuln_policy.labels(mode)._value.get() == 1


@pytest.mark.parametrize("patterns, ignore, refused", [
    ((), (), True),
    (("github.com/athens-vuln/*",), (), True),
    ((OTHER, "example.com"), (), False),  # the policy applies to the modules its patterns match
    ((), ("GO-2024-0001", "CVE-2024-2"), True),  # GO-2024-0002 still flags it
    ((), ("CVE-2024-1", "GO-2024-0002"), False),  # accepted risks, by alias or id
])
@pytest_twisted.ensureDeferred
async def test_patterns_and_accepted_advisories(proxy, patterns, ignore, refused):
    served, _, _ = await proxy("deny", patterns, ignore, snap=snapshot())
    assert (await deferToThread(get, served, f"/{M}/@v/v1.0.0.zip")).status == (403 if refused else 200)


@pytest_twisted.ensureDeferred
async def test_off_judges_nothing(proxy):
    served, _, metrics = await proxy("off", snap=snapshot())
    for _ in range(2):
        assert (await deferToThread(get, served, f"/{M}/@v/v1.0.0.zip")).status == 200
    assert served.port.factory.hits.answered == 1
    assert metrics.vuln_policy.labels("deny")._value.get() == 0
