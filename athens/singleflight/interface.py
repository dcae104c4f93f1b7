"""
What the stash needs from a lock across nodes, and what a lock server offers it.

:class:`ILock` is what :class:`athens.stash.Stash` holds; :class:`ILockServer`
is the small part that differs between Redis and etcd (where a holder's claim
lives and how it is kept alive), under one waiting loop
(:class:`athens.singleflight.polling.PollingLock`).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from athens.module import ModuleVersion

T = TypeVar("T")


class ILock(Interface):
    """One holder at a time per module version, across every node that shares the lock server."""

    def run(what: ModuleVersion, first: Callable[[], Awaitable[bool]],
            call: Callable[[], Awaitable[T]]) -> Awaitable[T | None]:
        """
        Run ``call`` holding the lock for ``what``.  ``first`` is asked after
        each wait (and once the lock is held) whether the work is done already
        (another node stored the version); if so, None is returned and ``call``
        does not run.  The lock server unreachable: StorageUnavailable (503);
        another node holding it longer than the wait: OriginTimeout (504).
        """

    def close() -> Deferred[None]:
        """Close connections to the lock server (at the daemon's stop)."""


class ILockServer(Interface):
    """
    Where claims on a module version live.  A claim (a "ticket") joins the
    queue for a version, is first in it when its holder may run, is renewed
    while it waits and while it runs, and leaves when its holder is done.
    Every method may raise StorageUnavailable when the server cannot be reached.
    """

    #: Seconds a claim lives when nobody renews it (a node that died).
    ttl = Attribute("ttl")

    def join(what: ModuleVersion) -> Deferred[Any]:
        """A new claim on ``what``; the ticket is opaque to the caller."""

    def turn(ticket: Any) -> Deferred[bool]:
        """Whether the claim holds the lock now."""

    def renew(ticket: Any) -> Deferred[bool]:
        """Keep the claim alive; False when it is no longer this ticket's (it expired, another took it)."""

    def leave(ticket: Any) -> Deferred[None]:
        """Give up the claim (held or not); never touches another holder's."""

    def close() -> Deferred[None]:
        """Close connections to the server."""
