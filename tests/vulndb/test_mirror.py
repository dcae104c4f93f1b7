"""Copying the database from a test upstream on loopback: once, again only when it changed, never a broken one."""

from __future__ import annotations

import json
import shutil

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.static import File

from athens.fetch.upstream import UpstreamFetcher
from athens.metrics import Metrics
from athens.vulndb.database import VulnDatabase
from athens.vulndb.errors import InvalidDatabase, UpstreamFailed
from athens.vulndb.mirror import RETRY, Mirror, Refresher
from athens.vulndb.store import MemoryVulnStore
from tests.inprocess import serve
from tests.vulndata import entry, tree, write_dir

M = "github.com/athens-vuln/lib"


class Counting(Resource):
    """The upstream's files, and the paths asked for."""

    isLeaf = True

    def __init__(self, directory) -> None:
        super().__init__()
        self.files = File(str(directory))
        self.asked: list[str] = []

    def render(self, request):  # noqa: N802 - Twisted's name
        self.asked.append(request.path.decode().removeprefix("/"))
        request.postpath = request.path.decode().strip("/").encode().split(b"/")
        request.prepath = []
        resource = self.files
        while request.postpath:
            resource = resource.getChildWithDefault(request.postpath.pop(0), request)
        return resource.render(request)


@attrs.define
class Upstream:
    directory: object
    counting: Counting
    served: object
    clock: Clock
    database: VulnDatabase
    mirror: Mirror

    def publish(self, entries, modified=None, **kwargs) -> None:
        shutil.rmtree(self.directory)
        self.directory.mkdir()
        write_dir(tree(entries, modified), self.directory, **kwargs)
        self.counting.files = File(str(self.directory))


@pytest.fixture
def upstream(tmp_path):
    from twisted.internet import reactor

    directory = tmp_path / "upstream"
    directory.mkdir()
    counting = Counting(directory)
    served = serve(counting)
    clock = Clock()
    clock.advance(1000)
    database = VulnDatabase(MemoryVulnStore(), clock)
    mirror = Mirror(served.url, UpstreamFetcher(served.url, reactor, served.pool, timeout=10), database)
    up = Upstream(directory, counting, served, clock, database, mirror)
    yield up
    if served.port.connected:  # (a test may have stopped its upstream)
        pytest_twisted.blockon(ensureDeferred(served.close()))


FIRST = [entry("GO-2024-0001", M), entry("GO-2024-0002", M, [{"introduced": "1.2.0"}])]


@pytest_twisted.ensureDeferred
async def test_copied_once_then_only_its_modified_time_is_asked(upstream):
    upstream.publish(FIRST)
    heard = []
    upstream.database.listeners.append(heard.append)
    assert await upstream.mirror.refresh() == "copied"
    assert upstream.counting.asked == ["index/db.json.gz", "vulndb.zip"]
    snapshot = upstream.database.snapshot
    assert heard == [snapshot] and snapshot.entries == 2
    assert (await upstream.database.store.state()).checked == 1000
    upstream.clock.advance(3600)
    assert await upstream.mirror.refresh() == "unchanged"
    assert upstream.counting.asked[2:] == ["index/db.json.gz"]
    assert upstream.database.snapshot is snapshot and heard == [snapshot]
    assert (await upstream.database.store.state()).checked == 4600  # known current: its age starts again
    assert upstream.database.age() == 0


@pytest_twisted.ensureDeferred
async def test_a_newer_database_replaces_the_copy(upstream):
    upstream.publish(FIRST)
    await upstream.mirror.refresh()
    upstream.publish([*FIRST, entry("GO-2024-0003", M + "/v2", modified="2024-05-01T00:00:00Z")])
    assert await upstream.mirror.refresh() == "copied"
    assert upstream.database.snapshot.entries == 3
    assert upstream.database.snapshot.modified == "2024-05-01T00:00:00Z"
    assert (await upstream.database.store.state()).modified == "2024-05-01T00:00:00Z"


@pytest_twisted.ensureDeferred
async def test_without_vulndb_zip_only_changed_entries_are_fetched(upstream):
    """An upstream with only what govulncheck reads (.json.gz files): copied file by file, then incrementally."""
    upstream.publish(FIRST, plain=False, zipped=False)
    assert await upstream.mirror.refresh() == "copied"
    assert sorted(upstream.counting.asked) == sorted([
        "index/db.json.gz", "vulndb.zip", "index/db.json.gz", "index/modules.json.gz", "index/vulns.json.gz",
        "ID/GO-2024-0001.json.gz", "ID/GO-2024-0002.json.gz"])
    upstream.counting.asked.clear()
    changed = entry("GO-2024-0002", M, [{"introduced": "1.3.0"}], modified="2024-06-01T00:00:00Z")
    upstream.publish([FIRST[0], changed], plain=False, zipped=False)
    assert await upstream.mirror.refresh() == "copied"
    assert [p for p in upstream.counting.asked if p.startswith("ID/")] == ["ID/GO-2024-0002.json.gz"]
    snapshot = upstream.database.snapshot
    assert json.loads(snapshot.json("ID/GO-2024-0002")) == changed
    assert snapshot.json("ID/GO-2024-0001") == tree(FIRST)["ID/GO-2024-0001"]
    assert [f.id for f in snapshot.advisories.affecting(M, "v1.2.5")] == []  # judged by the changed entry
    assert [f.id for f in snapshot.advisories.affecting(M, "v1.3.0")] == ["GO-2024-0002"]


@pytest_twisted.ensureDeferred
async def test_a_broken_database_upstream_leaves_the_copy_in_service(upstream):
    upstream.publish(FIRST)
    await upstream.mirror.refresh()
    good = upstream.database.snapshot
    upstream.publish(FIRST, modified="2024-09-01T00:00:00Z")
    (upstream.directory / "vulndb.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InvalidDatabase):
        await upstream.mirror.refresh()
    assert upstream.database.snapshot is good
    assert (await upstream.database.store.state()).digest == good.digest


@pytest_twisted.ensureDeferred
async def test_a_dead_upstream_leaves_the_copy_in_service_and_ages_it(upstream):
    upstream.publish(FIRST)
    await upstream.mirror.refresh()
    good = upstream.database.snapshot
    await upstream.served.close()  # dead: nothing listens on its port any more
    metrics = Metrics()
    refresher = Refresher(upstream.mirror, upstream.clock, 3600, metrics)
    refresher._call = upstream.clock.callLater(0, lambda: None)  # as if started: the next attempt is scheduled
    upstream.clock.advance(7200)
    assert await refresher.refresh() == "failed"
    assert "cannot reach" in refresher.failure or "did not answer" in refresher.failure
    assert upstream.database.snapshot is good and upstream.database.age() == 7200
    assert metrics.vulndb_refreshes.labels("failed")._value.get() == 1
    assert [c.getTime() - upstream.clock.seconds() for c in upstream.clock.getDelayedCalls() if c.active()] \
        == [RETRY]  # sooner than the schedule
    refresher.stop()
    assert not [c for c in upstream.clock.getDelayedCalls() if c.active()]
    # A restart with the upstream still dead: the stored copy is in service before anything is fetched.
    restarted = VulnDatabase(upstream.database.store, upstream.clock)
    with pytest.raises(UpstreamFailed):
        await attrs.evolve(upstream.mirror, database=restarted).refresh()
    assert restarted.snapshot.digest == good.digest


@attrs.define
class FakeMirror:
    outcomes: list
    url: str = "http://upstream.invalid"

    async def refresh(self) -> str:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_the_schedule():
    """Now, then every interval; after a failure sooner (but never later than the interval); stop ends it."""
    clock = Clock()
    mirror = FakeMirror(["copied", UpstreamFailed("down"), "unchanged", "unchanged"])
    refresher = Refresher(mirror, clock, 600)
    refresher.start()
    clock.advance(0)
    assert mirror.outcomes[0].args == ("down",)
    clock.advance(599)
    assert len(mirror.outcomes) == 3
    clock.advance(1)
    assert len(mirror.outcomes) == 2 and refresher.failure == "down"
    clock.advance(min(RETRY, 600))
    assert len(mirror.outcomes) == 1 and refresher.failure == ""
    refresher.stop()
    clock.advance(10_000)
    assert len(mirror.outcomes) == 1
