"""
Copying the vulnerability database from its upstream (``VulnDBURL``), on a schedule.

Each refresh asks for ``index/db.json.gz`` alone (a few bytes); only when its
``modified`` is newer than the copy in service is the database copied:
``vulndb.zip`` in one request where the upstream has it (vuln.go.dev does, and
so does this proxy), else file by file as govulncheck reads them
(``index/*.json.gz``, then ``ID/<id>.json.gz``), fetching only the entries whose
``modified`` changed.  Everything is checked whole (:mod:`athens.vulndb.snapshot`)
before it replaces anything; a failure of any kind leaves the last good copy
in service, and the next attempt comes sooner than the schedule.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from athens.fetch.interface import OriginError, OriginNotFound
from athens.storage.interface import StorageError
from athens.vulndb.archive import MAX_ARCHIVE, MAX_FILE, gunzip
from athens.vulndb.database import VulnDatabase
from athens.vulndb.errors import InvalidDatabase, UpstreamFailed, VulnDBError
from athens.vulndb.snapshot import Snapshot, build, check_db, from_archive, vulns_index

log = Logger()

#: Seconds before another attempt after a failed refresh (at most the schedule's interval).
RETRY = 300.0


class Files(Protocol):
    """What the mirror needs of an HTTP client: a file under the upstream's URL (UpstreamFetcher.get_file)."""

    def get_file(self, path: str, limit: int = ...) -> Any: ...


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise InvalidDatabase(f"{what} is not JSON: {e}") from None


@attrs.define
class Mirror:
    """Copies the database from ``url`` into ``database`` when the upstream has a newer one."""

    url: str
    files: Files
    database: VulnDatabase
    #: Entries fetched at once when copying file by file.
    parallel: int = 8

    async def _get(self, path: str, limit: int = MAX_FILE) -> bytes:
        try:
            return await self.files.get_file(path, limit)  # type: ignore[no-any-return]
        except OriginNotFound:
            raise
        except OriginError as e:
            raise UpstreamFailed(f"{self.url}/{path}: {e}") from None

    async def _gz(self, endpoint: str) -> bytes:
        try:
            data = await self._get(endpoint + ".json.gz")
        except OriginNotFound as e:
            raise UpstreamFailed(f"{self.url}/{endpoint}.json.gz: not found ({e})") from None
        # Sent with Content-Encoding: gzip (a static server's habit), treq has inflated it already.
        return gunzip(data) if data[:2] == b"\x1f\x8b" else data

    async def refresh(self) -> str:
        """``copied`` or ``unchanged``; raises VulnDBError or StorageError, and the copy in service stays."""
        try:
            await self.database.sync()  # (at start: the stored copy, before anything is fetched)
        except StorageError as e:
            log.warn("cannot read the vulnerability database from storage: {error}", error=str(e))
        _, modified_at = check_db(_json(await self._gz("index/db"), "index/db.json"))
        current = self.database.snapshot
        if current is not None and modified_at <= current.modified_at:
            await self.database.confirm()
            return "unchanged"
        snapshot = await self._copy(current)
        if current is not None and snapshot.modified_at <= current.modified_at:
            return "unchanged"  # the files lag the index (a cache in front of the upstream): copied next time
        await self.database.publish(snapshot, self.url)
        return "copied"

    async def _copy(self, current: Snapshot | None) -> Snapshot:
        try:
            archive = await self._get("vulndb.zip", MAX_ARCHIVE)
        except OriginNotFound:
            return await self._copy_files(current)
        return await deferToThread(from_archive, archive)

    async def _copy_files(self, current: Snapshot | None) -> Snapshot:
        """File by file, as govulncheck reads them; an entry whose ``modified`` is unchanged is not fetched."""
        tree = {endpoint: await self._gz(endpoint) for endpoint in ("index/db", "index/modules", "index/vulns")}
        listed = vulns_index(_json(tree["index/vulns"], "index/vulns.json"))
        for record in _json(tree["index/modules"], "index/modules.json") or []:
            for vuln in (record.get("vulns") or []) if isinstance(record, dict) else []:
                if isinstance(vuln, dict) and isinstance(vuln.get("id"), str):
                    listed.setdefault(vuln["id"], "")
        slots = DeferredSemaphore(self.parallel)

        async def entry(vid: str, modified: str) -> None:
            old = current.json("ID/" + vid) if current and modified and current.entry_modified.get(vid) == modified \
                else None
            tree["ID/" + vid] = old if old is not None else await self._gz("ID/" + vid)

        results = await DeferredList([slots.run(lambda v=vid, m=m: ensureDeferred(entry(v, m)))
                                      for vid, m in listed.items()], consumeErrors=True)
        for ok, failure in results:
            if not ok:
                failure.raiseException()
        return await deferToThread(build, tree)


@attrs.define
class Refresher:
    """Runs :meth:`Mirror.refresh` now and every ``interval`` seconds (sooner again after a failure)."""

    mirror: Mirror
    clock: IReactorTime
    interval: float
    metrics: Any = None
    #: The last failure, for the logs (said once until it changes).
    failure: str = ""
    _call: IDelayedCall | None = None
    _running: Deferred[None] | None = None

    def start(self) -> None:
        self._call = self.clock.callLater(0, self._run)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._running is not None:
            self._running.cancel()

    def _run(self) -> None:
        self._running = ensureDeferred(self.refresh())
        self._running.addErrback(lambda f: f.trap(CancelledError))

    async def refresh(self) -> str:
        """One refresh, logged and counted; the next one scheduled."""
        outcome, delay = "failed", min(RETRY, self.interval)
        try:
            outcome = await self.mirror.refresh()
            delay = self.interval
            if self.failure:
                log.info("vulnerability database upstream {url} answers again", url=self.mirror.url)
            self.failure = ""
        except (VulnDBError, StorageError) as e:
            if str(e) != self.failure:
                log.warn("vulnerability database refresh from {url} failed ({error}); the copy in service stays",
                         url=self.mirror.url, error=str(e))
            self.failure = str(e)
        finally:
            self._running = None
            if self.metrics is not None:
                self.metrics.vulndb_refreshes.labels(outcome).inc()
            if self._call is not None:
                self._call = self.clock.callLater(delay, self._run)
        return outcome
