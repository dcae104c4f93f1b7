"""
The copy of the vulnerability database this process serves and judges by.

Every process reads the copy from the store (:mod:`athens.vulndb.store`)
and polls the store's small state to follow changes made by another worker,
another node or ``athens-admin vulndb import``; the daemon's own refresher
(:mod:`athens.vulndb.mirror`) :meth:`publishes <VulnDatabase.publish>` new
copies.  A copy is swapped in whole, on the reactor thread, and listeners
hear of it at once (the hit path forgets its answers, so that a zip the new
copy flags is judged again).  A copy that fails its checks is never swapped
in: the last good one stays in service.
"""

from __future__ import annotations

import math
from typing import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from athens.vulndb.errors import InvalidDatabase
from athens.vulndb.osv import timestamp
from athens.vulndb.snapshot import Snapshot, from_archive
from athens.vulndb.store import IVulnStore, State

log = Logger()


@attrs.define
class VulnDatabase:
    """The copy this process serves and judges by, and where it is stored."""

    store: IVulnStore
    clock: IReactorTime
    snapshot: Snapshot | None = None
    state: State | None = None
    #: Called with each new snapshot, once it is in service.
    listeners: list[Callable[[Snapshot], None]] = attrs.field(factory=list)
    #: A stored copy that failed its checks: not read again until the store holds another.
    _refused: str = ""

    def age(self) -> float:
        """Seconds since the copy was last known to be current; infinite without one."""
        if self.state is None or self.snapshot is None:
            return math.inf
        return max(0.0, self.clock.seconds() - self.state.checked)

    def describe(self) -> str:
        """One line for /readyz."""
        if self.snapshot is None or self.state is None:
            return "vulnerability database: no copy yet"
        return (f"vulnerability database: {self.snapshot.entries} entries, modified {self.snapshot.modified}, "
                f"checked {self.age():.0f}s ago")

    async def sync(self) -> bool:
        """Follow the store: swap in the copy it holds if it is another; True if one was swapped in."""
        state = await self.store.state()
        if state is None:
            return False
        if self.state is not None and state.digest == self.state.digest:
            self.state = state  # (its checked time may have moved)
            return False
        if state.digest == self._refused or self._newer_than(state):
            return False
        loaded = await self.store.load()
        if loaded is None:
            return False
        state, archive = loaded
        try:
            snapshot = await deferToThread(from_archive, archive, True)
        except InvalidDatabase as e:
            self._refused = state.digest
            log.error("the stored vulnerability database is broken ({error}): the copy in service stays",
                      error=str(e))
            return False
        return self.install(snapshot, state)

    def _newer_than(self, stored: State) -> bool:
        """Whether the copy in service is newer than the stored one (whose save failed, or raced with ours)."""
        if self.snapshot is None:
            return False
        try:
            return self.snapshot.modified_at > timestamp(stored.modified, "the stored state's modified")
        except InvalidDatabase:
            return False

    def install(self, snapshot: Snapshot, state: State) -> bool:
        """Put a checked copy in service (unless it is the one already there); True if it changed."""
        if self.snapshot is not None and self.snapshot.digest == snapshot.digest:
            self.state = state
            return False
        self.snapshot, self.state = snapshot, state
        log.info("vulnerability database in service: {entries} entries, modified {modified} (from {source})",
                 entries=snapshot.entries, modified=snapshot.modified, source=state.source or "storage")
        for listener in self.listeners:
            listener(snapshot)
        return True

    async def publish(self, snapshot: Snapshot, source: str) -> None:
        """A new copy: in service here, then stored for every process and node (a failed save is retried by
        :meth:`confirm`)."""
        state = State(snapshot.digest, snapshot.modified, self.clock.seconds(), source)
        self.install(snapshot, state)
        await self.store.save(state, snapshot.archive)

    async def confirm(self) -> None:
        """The upstream has nothing newer: the copy is current as of now, in the store too."""
        if self.state is None or self.snapshot is None:
            return
        now = self.clock.seconds()
        self.state = attrs.evolve(self.state, checked=now)
        stored = await self.store.state()
        if stored is not None and stored.digest == self.state.digest:
            await self.store.confirm(stored.digest, now)
        elif stored is None or self._newer_than(stored):  # the store missed this copy (a failed save)
            await self.store.save(self.state, self.snapshot.archive)
