"""
The daemon's part of the vulnerability database: the copy in service, the policy, and their timers.

Every process follows the store (every :data:`POLL` seconds); the first
process of a node also refreshes the copy from ``VulnDBURL`` (every
``VulnDBRefresh`` seconds), so workers never ask the upstream themselves.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredSemaphore, TimeoutError, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from athens.config import Config
from athens.fetch.upstream import UpstreamFetcher
from athens.storage.interface import IStorage, StorageError
from athens.vulndb.database import VulnDatabase
from athens.vulndb.errors import VulnDBError
from athens.vulndb.mirror import Mirror, Refresher
from athens.vulndb.policy import VulnPolicy
from athens.vulndb.store import vuln_store

log = Logger()

#: Seconds between two looks at the store's copy.
POLL = 10.0


class VulnDBService(Service):
    """Owns the copy in service and the policy; follows the store, and refreshes from the upstream."""

    def __init__(self, config: Config, storage: IStorage, reactor: Any, pool: Any, metrics: Any) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.database = VulnDatabase(vuln_store(storage), reactor)
        self.policy = VulnPolicy(config.vuln_policy, self.database, config.vuln_policy_patterns,
                                 frozenset(config.vuln_policy_ignore), metrics)
        self.refresher: Refresher | None = None
        if config.vulndb_url:
            files = UpstreamFetcher(config.vulndb_url, reactor, pool, timeout=min(config.timeout, 60),
                                    slots=DeferredSemaphore(8))
            self.refresher = Refresher(Mirror(config.vulndb_url, files, self.database), reactor,
                                       config.vulndb_refresh, metrics)
        #: Whether this process refreshes from the upstream (the daemon's first process, not its workers).
        self.refreshing = True
        self.polling = LoopingCall(lambda: ensureDeferred(self.follow()))
        self.polling.clock = reactor
        self._failure = ""

    async def follow(self) -> None:
        """Swap in the store's copy if another process or node changed it; the store being down is said once."""
        try:
            await self._sync()
            self._failure = ""
        except (StorageError, VulnDBError, TimeoutError) as e:
            if str(e) != self._failure:
                log.warn("cannot read the vulnerability database from storage: {error}", error=str(e))
            self._failure = str(e)

    def _sync(self) -> Deferred[bool]:
        d = ensureDeferred(self.database.sync())
        d.addTimeout(30, self.reactor)
        return d

    def measure(self) -> None:
        """The copy's age and size into the metrics (every second)."""
        self.metrics.vulndb_age.set(self.database.age())
        snapshot = self.database.snapshot
        self.metrics.vulndb_entries.set(snapshot.entries if snapshot else 0)

    def startService(self) -> None:
        super().startService()
        self.polling.start(POLL, now=self.refresher is None or not self.refreshing)
        if self.refresher is not None and self.refreshing:
            self.refresher.start()

    def stopService(self) -> None:
        super().stopService()
        if self.polling.running:
            self.polling.stop()
        if self.refresher is not None:
            self.refresher.stop()
