"""
The save path for a cache miss: fetch once, check, store atomically.

Concurrent misses for one version, foreground or background, share one
fetch (single-flight).  What the origin sent is checked (the ``.info``
names the version, the zip follows the module zip rules) before storage
sees it; a failed fetch stores nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from athens.fetch.interface import Fetched, Growing, IFetcher, OriginError, OriginNotFound
from athens.metrics import Metrics
from athens.modzip import InvalidZip, check_zip
from athens.module import ModuleVersion
from athens.singleflight import SingleFlight
from athens.singleflight.interface import ILock
from athens.storage.disk import FileBlob
from athens.storage.interface import IStorage, StorageError
from athens.sumdb import ChecksumMismatch, ChecksumVerifier, OwnSumDB

log = Logger()

#: How many fills :attr:`Stash.recent` keeps.
RECENT_FILLS = 20


@attrs.frozen
class Fill:
    """A version this process fetched from the origin and stored (the status page lists the last few)."""

    module: str
    version: str
    #: When it was stored (epoch seconds), and how long the fetch and save took.
    at: float
    seconds: float


@attrs.define
class Stash:
    fetcher: IFetcher
    storage: IStorage
    #: Across nodes (``SingleFlightType`` redis, redis-sentinel, etcd); None: this process only.
    lock: ILock | None = None
    #: Checks what upstreams send against the checksum database; None: not checked.
    verifier: ChecksumVerifier | None = None
    metrics: Metrics = attrs.field(factory=Metrics)
    #: The organisation's checksum database: logs what is stored, refuses what differs from its log.
    own: OwnSumDB | None = None
    flights: SingleFlight[None] = attrs.field(factory=SingleFlight)
    #: Zips arriving now, for stream-through; and who waits to hear of one.
    _growing: dict[ModuleVersion, Growing] = attrs.field(factory=dict)
    _zip_waiters: dict[ModuleVersion, list[Deferred[Growing | None]]] = attrs.field(factory=dict)
    #: The last fills, newest first.
    recent: deque[Fill] = attrs.field(factory=lambda: deque(maxlen=RECENT_FILLS))

    def zip_arriving(self, module: str, version: str) -> tuple[Deferred[Growing | None], Deferred[None]]:
        """
        Start (or join) the fill; the first Deferred fires with the zip as it
        starts arriving, or with None if the fill ends first (the fetcher does
        not stream, or failed).  The second is this caller's place in the fill,
        for :meth:`abandon`.
        """
        key = ModuleVersion(module, version)
        place = self.stash(module, version)  # the caller awaits it, or drops its errors
        if key in self._growing:
            return succeed(self._growing[key]), place
        d: Deferred[Growing | None] = Deferred()
        if not self.flights.in_flight(key):
            d.callback(None)
            return d, place
        self._zip_waiters.setdefault(key, []).append(d)
        return d, place

    def abandon(self, module: str, version: str, place: Deferred[None]) -> bool:
        """Stop the fill if nobody but the caller (a client that left) waits for it; nothing is stored."""
        stopped = self.flights.cancel_if_alone(ModuleVersion(module, version), place)
        if stopped:
            log.info("stopped filling {what}: its only client left", what=f"{module}@{version}")
        return stopped

    def _zip_started(self, key: ModuleVersion, growing: Growing) -> None:
        self._growing[key] = growing
        for d in self._zip_waiters.pop(key, []):
            if not d.called:
                d.callback(growing)

    def _flight_over(self, key: ModuleVersion) -> None:
        self._growing.pop(key, None)
        for d in self._zip_waiters.pop(key, []):
            if not d.called:
                d.callback(None)

    def stash(self, module: str, version: str) -> Deferred[None]:
        """Make ``module@version`` stored; fires when it is (or with the origin's error)."""
        key = ModuleVersion(module, version)
        return self.flights.do(key, lambda: self._stash_then_forget(key))

    async def _stash_then_forget(self, key: ModuleVersion) -> None:
        try:
            await self._stash(key)
        finally:
            self._flight_over(key)

    def background(self, module: str, version: str) -> None:
        """Fill in the background (async modes): failures are logged, never raised."""
        d = self.stash(module, version)
        d.addErrback(lambda f: log.warn("background fill of {what} failed: {error}", what=f"{module}@{version}",
                                        error=f.getErrorMessage()))

    async def _stash(self, key: ModuleVersion) -> None:
        if await self.storage.exists(key.path, key.version):
            return
        if self.lock is None:
            await self._fetch(key)
            return

        async def stored() -> bool:
            return bool(await self.storage.exists(key.path, key.version))

        await self.lock.run(key, stored, lambda: self._fetch(key))

    async def _fetch(self, key: ModuleVersion) -> None:
        started = self.metrics.fetch_started()
        outcome = "error"
        try:
            await self._fetch_and_store(key)
            outcome = "stored"
        except OriginNotFound:
            outcome = "not_found"
            raise
        except OriginError as e:  # once per fetch, however many clients wait for it
            log.warn("fetching {what} from {origin} failed: {error}", what=str(key), origin=origin_name(self.fetcher),
                     error=str(e), module=key.path, version=key.version)
            raise
        finally:
            self.metrics.fetch_ended(started, outcome)

    async def _fetch_and_store(self, key: ModuleVersion) -> None:
        started = time.monotonic()
        fetched = await self.fetcher.download(key.path, key.version, lambda g: self._zip_started(key, g))
        try:
            zip_hash = await deferToThread(_check, fetched)
            verified = False
            if self.verifier is not None and not fetched.checked and not self.verifier.skips(key.path):
                try:
                    await self.verifier.verify(key.path, key.version, zip_hash, fetched.mod)
                except ChecksumMismatch:
                    self.metrics.checksum_refusals.labels("upstream").inc()
                    raise
                verified = True
            if self.own is not None:
                await self._vouch(key, zip_hash, fetched.mod, verified)
            f = await deferToThread(open, fetched.zip_path, "rb")
            blob = FileBlob(f, os.fstat(f.fileno()).st_size)
            try:
                stored = await self.storage.save(key.path, key.version, fetched.info, fetched.mod, blob.chunks())
            finally:
                blob.close()
            log.info("stored {what} from the origin{again}", what=str(key), again="" if stored else " (already there)")
            if stored:
                self.recent.appendleft(Fill(key.path, key.version, time.time(), time.monotonic() - started))
        finally:
            await fetched.cleanup()

    async def _vouch(self, key: ModuleVersion, zip_hash: str, mod: bytes, verified: bool) -> None:
        """Log the version before it is stored: a copy that differs from the log is refused (raised)."""
        assert self.own is not None
        try:
            await self.own.admit(key.path, key.version, zip_hash, mod, verified)
        except ChecksumMismatch:
            raise
        except (OriginError, StorageError) as e:  # stored all the same; a lookup logs it later, or says why not
            log.warn("{what} is stored but not logged in the checksum database {name}: {error}", what=str(key),
                     name=self.own.name, error=str(e))


def origin_name(fetcher: IFetcher) -> str:
    """For logs: the upstream's URL, the GOPROXY list, or the go command."""
    entries = getattr(fetcher, "entries", None)
    if entries is not None:
        return "GOPROXY=" + ",".join(e.name for e in entries)
    return str(getattr(fetcher, "url", "") or getattr(getattr(fetcher, "default", None), "url", "") or "the go command")


def _check(fetched: Fetched) -> str:
    """The zip rules; returns the zip's h1: hash."""
    try:
        info = json.loads(fetched.info)
    except ValueError:
        raise OriginError(f"the origin sent a .info for {fetched.module}@{fetched.version} that is not JSON") from None
    if not isinstance(info, dict) or info.get("Version") != fetched.version:
        raise OriginError(f"the origin sent a .info for {fetched.module}@{fetched.version} naming another version")
    try:
        return check_zip(fetched.zip_path, fetched.module, fetched.version, fetched.mod)
    except InvalidZip as e:
        log.error("refused the zip of {what} from the origin: {error}", what=f"{fetched.module}@{fetched.version}",
                  error=str(e), security=True)
        raise OriginError(f"the origin sent an invalid zip for {fetched.module}@{fetched.version}: {e}") from None
