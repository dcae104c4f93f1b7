"""
The waiting loop every lock across nodes shares, whatever server holds the claims.

A node joins the queue for a version, asks every ``poll`` seconds whether its
claim holds the lock (and whether another node has stored the version
meanwhile), renews the claim every third of its TTL from the moment it joins,
and leaves the queue whatever happens.  A node that dies stops renewing, so
its claim lapses after the TTL and the next node goes on.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from zope.interface import implementer

from athens.fetch.interface import OriginTimeout
from athens.module import ModuleVersion
from athens.singleflight.interface import ILock, ILockServer
from athens.storage.interface import StorageUnavailable

log = Logger()
T = TypeVar("T")


@implementer(ILock)
@attrs.define
class PollingLock:
    server: ILockServer
    clock: IReactorTime
    #: How long a node waits for another's fetch before giving up (504), seconds.
    wait: float = 900.0
    poll: float = 0.2
    #: Attempts of a call to the server while it is unreachable (``LockConfig.MaxRetries``).
    retries: int = 10

    async def run(self, what: ModuleVersion, first: Callable[[], Awaitable[bool]],
                  call: Callable[[], Awaitable[T]]) -> T | None:
        ticket = await self._retrying(lambda: self.server.join(what))
        renewal = _Renewal(self.server, ticket, what)
        renewal.start(self.clock, self.server.ttl)
        try:
            deadline = self.clock.seconds() + self.wait
            while not await self._retrying(lambda: self.server.turn(ticket)):
                if self.clock.seconds() > deadline:
                    raise OriginTimeout(f"{what} is being fetched by another node for over {self.wait:g}s")
                await deferLater(self.clock, self.poll, lambda: None)
                if await first():
                    return None
            renewal.holding = True
            if await first():
                return None
            return await call()
        finally:
            renewal.stop()
            try:
                await self.server.leave(ticket)
            except Exception as e:  # it lapses anyway
                log.warn("could not release the lock for {what}: {error}", what=str(what), error=str(e))

    async def _retrying(self, step: Callable[[], Deferred[T]]) -> T:
        for attempt in range(self.retries - 1):
            try:
                return await step()
            except StorageUnavailable:
                await deferLater(self.clock, min(0.1 * 2**attempt, 2.0), lambda: None)
        return await step()

    def close(self) -> Deferred[None]:
        return self.server.close()


@attrs.define
class _Renewal:
    """Renews a claim every third of its TTL; says once if the claim was lost while its holder ran."""

    server: ILockServer
    ticket: Any
    what: ModuleVersion
    holding: bool = False
    lost: bool = False
    loop: LoopingCall | None = None

    def start(self, clock: IReactorTime, ttl: float) -> None:
        self.loop = LoopingCall(lambda: ensureDeferred(self._renew()))
        self.loop.clock = clock
        self.loop.start(max(ttl / 3, 0.05), now=False)

    def stop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    async def _renew(self) -> None:
        try:
            kept = await self.server.renew(self.ticket)
        except Exception as e:  # a renewal that failed once may succeed next time, before the TTL
            log.warn("could not renew the lock for {what}: {error}", what=str(self.what), error=str(e))
            return
        if not kept and self.holding and not self.lost:
            self.lost = True
            log.warn("lost the lock for {what} while fetching it (not renewed within its TTL): another node may "
                     "fetch it too", what=str(self.what))
