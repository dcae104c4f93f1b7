"""
The origin's version lists, cached with a TTL and served stale.

Athens runs ``go list`` on every ``@v/list`` (31 s for a large module,
gomods/athens#1733).  Here a fresh entry answers at once; a stale one
answers at once too while one refresh runs in the background; an origin
that fails leaves the last good listing in service.  "No such module" is
cached for a shorter time, so import-path probes (``a/b/c``, ``a/b``) are
answered fast without hiding a module that appears later for long.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from athens.fetch.interface import IFetcher, Listing, OriginError, OriginNotFound
from athens.singleflight import SingleFlight

log = Logger()


@attrs.frozen
class _Entry:
    at: float
    listing: Listing | None
    missing: OriginNotFound | None = None


@attrs.define
class ListCache:
    fetcher: IFetcher
    clock: Any  # IReactorTime
    ttl: float = 60.0
    negative_ttl: float = 15.0
    #: A listing older than this is not served while refreshing (it still is if the origin fails).
    max_stale: float = 86400.0
    max_entries: int = 10000
    _entries: OrderedDict[str, _Entry] = attrs.field(factory=OrderedDict)
    _flights: SingleFlight[Listing] = attrs.field(factory=SingleFlight)

    async def get(self, module: str) -> Listing:
        entry = self._entries.get(module)
        if entry is not None:
            age = self.clock.seconds() - entry.at
            if entry.missing is not None and age < self.negative_ttl:
                raise entry.missing
            if entry.listing is not None:
                if age < self.ttl:
                    return entry.listing
                if age < self.max_stale:
                    self._refresh(module).addErrback(self._log_refresh, module)
                    return entry.listing
        try:
            return await self._refresh(module)
        except OriginNotFound:
            raise
        except OriginError as e:
            if entry is not None and entry.listing is not None:
                log.warn("origin failed for {module}, serving its last listing: {error}", module=module, error=str(e))
                return entry.listing
            raise

    def _refresh(self, module: str) -> Deferred[Listing]:
        return self._flights.do(module, lambda: self._load(module))

    async def _load(self, module: str) -> Listing:
        try:
            listing = await self.fetcher.listing(module)
        except OriginNotFound as e:
            self._put(module, _Entry(self.clock.seconds(), None, e))
            raise
        self._put(module, _Entry(self.clock.seconds(), listing))
        return listing

    def _put(self, module: str, entry: _Entry) -> None:
        self._entries.pop(module, None)
        self._entries[module] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    @staticmethod
    def _log_refresh(failure: Any, module: str) -> None:
        log.warn("background refresh of the list of {module} failed: {error}", module=module,
                 error=failure.getErrorMessage())
