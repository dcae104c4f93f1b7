"""
What a store holds, for the status page: modules, versions and bytes.

Counting reads the whole store, so it is never done for a page view: a
:class:`SummaryCache` keeps the last count and starts a new one (in the
background) only when the page is viewed and the count is older than its
``max_age``.  A backend that can count in one pass, or cheaply, provides
:class:`IStorageSummary`; any other is counted through its catalog.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from zope.interface import Interface

from athens.storage.interface import IStorage

log = Logger()

#: Catalog page size for backends counted through their catalog.
PAGE = 1000


@attrs.frozen
class Summary:
    """A count of a store at one moment."""

    modules: int
    versions: int
    #: Bytes the store takes, when the backend can tell; None when it cannot.
    size: int | None = None
    #: What ``size`` measures, for the page ("files under the root", ...).
    size_of: str = ""


class IStorageSummary(Interface):
    def summary() -> Deferred[Summary]:
        """Count the store (whole versions, as the catalog lists them) and its size; may read all of it."""


async def summarize(storage: IStorage) -> Summary:
    """The backend's own count when it has one, else its catalog paged through."""
    if IStorageSummary.providedBy(storage):
        return await storage.summary()  # type: ignore[no-any-return]
    return await count_catalog(storage)


async def count_catalog(storage: IStorage) -> Summary:
    """Modules and versions, a catalog page at a time (no size)."""
    modules: set[str] = set()
    versions = 0
    token = ""
    while True:
        page = await storage.catalog(token, PAGE)
        versions += len(page.items)
        modules.update(item.path for item in page.items)
        token = page.next_token
        if not token:
            return Summary(len(modules), versions)


@attrs.define
class SummaryCache:
    """The last count, and at most one count running; a new one starts when a reader finds it too old."""

    count: Callable[[], Deferred[Summary]]
    #: Seconds now (a reactor's ``seconds``).
    now: Callable[[], float]
    #: Seconds a count is shown before a page view starts the next one.
    max_age: float = 300.0
    last: Summary | None = None
    #: When ``last`` was counted (the clock's seconds).
    counted_at: float = 0.0
    #: Why the last count failed, if it did (shown instead of figures).
    error: str = ""
    _running: Deferred[None] | None = None
    _waiters: list[Deferred[None]] = attrs.field(factory=list)

    @classmethod
    def of(cls, storage: IStorage, now: Callable[[], float], max_age: float = 300.0) -> "SummaryCache":
        return cls(lambda: ensureDeferred(summarize(storage)), now, max_age)

    def age(self) -> float:
        return self.now() - self.counted_at

    def refresh(self) -> None:
        """Start a count unless one runs or the last one is fresh enough."""
        if self._running is not None or (self.counted_at and self.age() < self.max_age):
            return
        self._running = self.count().addCallbacks(self._counted, self._failed)

    def _counted(self, summary: Summary) -> None:
        self.last, self.counted_at, self.error = summary, self.now(), ""
        self._done()

    def _failed(self, failure: Any) -> None:
        self.error = failure.getErrorMessage() or failure.type.__name__
        self.counted_at = self.now()  # the next try waits max_age too: a failing store is not hammered
        log.warn("counting the store for the status page failed: {error}", error=self.error)
        self._done()

    def _done(self) -> None:
        self._running = None
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def settled(self) -> Deferred[None]:
        """Fires when no count runs (at once if none does); cancelling it leaves the count running."""
        d: Deferred[None] = Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        if self._running is None:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d
