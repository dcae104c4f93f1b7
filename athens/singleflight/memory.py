"""
In-process single-flight: any number of callers for one key share one call.

Every caller gets a Deferred of its own, fired with the same result or
failure; cancelling one (a client that hangs up) does not cancel the call
the others are waiting for.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Generic, Hashable, TypeVar

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._waiters: dict[Hashable, list[Deferred[T]]] = {}
        self._calls: dict[Hashable, Deferred[T]] = {}

    def cancel_if_alone(self, key: Hashable, waiter: Deferred[T]) -> bool:
        """Cancel the call for ``key`` if ``waiter`` is the only one still waiting for it."""
        waiting = [w for w in self._waiters.get(key, []) if not w.called]
        if waiting != [waiter] or key not in self._calls:
            return False
        self._calls[key].cancel()
        return True

    def settled(self) -> Deferred[None]:
        """Fires when every call running now has ended (however it ended)."""
        done: Deferred[None] = DeferredList(list(self._calls.values()), consumeErrors=True).addCallback(lambda _: None)
        return done

    def cancel_all(self) -> None:
        """Cancel every call still running (a stop that cannot wait longer)."""
        for call in list(self._calls.values()):
            call.cancel()

    def in_flight(self, key: Hashable) -> bool:
        return key in self._waiters

    def __len__(self) -> int:
        return len(self._waiters)

    def do(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> Deferred[T]:
        """Join the call for ``key`` or start it."""
        waiter: Deferred[T] = Deferred()
        if key in self._waiters:
            self._waiters[key].append(waiter)
            return waiter
        self._waiters[key] = [waiter]
        running = ensureDeferred(call())
        self._calls[key] = running
        running.addBoth(self._finish, key)  # type: ignore[arg-type]
        return waiter

    def _finish(self, result: T | Failure, key: Hashable) -> None:
        self._calls.pop(key, None)
        for waiter in self._waiters.pop(key):
            if not waiter.called:  # a cancelled waiter has fired already
                waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)
        if isinstance(result, Failure):
            result.cleanFailure()
