"""
What a fetcher offers, and the errors that map to what a client can act on.

Errors carry the origin's own words so that the go command can print them:
not found is a 404, a timeout a 504, an origin that cannot be reached a 502.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Interface


class OriginError(Exception):
    """The origin failed (502): reachable but broken, or unreachable."""

    status = 502


class OriginNotFound(OriginError):
    """The origin says the module or version does not exist (404)."""

    status = 404


class OriginTimeout(OriginError):
    """The origin did not answer in time (504)."""

    status = 504


@attrs.frozen
class Fetched:
    """A module version from the origin; its zip is a file the fetcher removes in ``cleanup``."""

    module: str
    version: str
    info: bytes
    mod: bytes
    zip_path: str
    cleanup: Callable[[], Awaitable[None]]
    #: The go command checked it against the checksum database itself (its GOSUMDB settings).
    checked: bool = False


@attrs.frozen
class Listing:
    """What the origin knows of a module: tagged versions (pseudo-versions out) and its latest."""

    versions: tuple[str, ...]
    #: The ``.info`` JSON of ``@latest`` (may be a pseudo-version), if the origin has one.
    latest: bytes | None


@attrs.define
class Growing:
    """
    A zip being downloaded into a file: readers follow it as it grows, so a
    client gets the first bytes long before the last have arrived.
    """

    path: str
    #: The size the origin announced, if it did.
    declared: int | None = None
    written: int = 0
    finished: bool = False
    error: Exception | None = None
    _waiters: list[Deferred[None]] = attrs.field(factory=list)

    def advance(self, n: int) -> None:
        self.written += n
        self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    def fail(self, error: Exception) -> None:
        self.error = error
        self._wake()

    def changed(self) -> Deferred[None]:
        """Fires at the next write, the end, or a failure."""
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


#: Told about a zip as soon as its transfer starts (stream-through).
OnZip = Callable[[Growing], None]


class IFetcher(Interface):
    def download(module: str, version: str, on_zip: OnZip | None = None) -> Deferred[Fetched]:
        """
        Fetch a canonical version; the caller must await ``cleanup()``.  A
        fetcher that streams calls ``on_zip`` when the zip starts arriving.
        """

    def query(module: str, query: str) -> Deferred[bytes]:
        """Resolve a query (branch, commit, ``v1.2``, ``latest``) to its ``.info`` JSON."""

    def listing(module: str) -> Deferred[Listing]:
        """The origin's versions and latest; OriginNotFound if it has no such module."""
