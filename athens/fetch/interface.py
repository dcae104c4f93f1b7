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


class NoSmallFetch(Exception):
    """This origin hands out a version only whole (the go command): fetch it whole."""


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
    client gets the first bytes long before the last have arrived.  When the
    slowest reader falls more than ``lead`` bytes behind, the download is
    paused (``throttle(True)``) until it catches up by half: a slow client
    slows the upstream read.  A reader that leaves stops holding it back.
    """

    path: str
    #: The size the origin announced, if it did.
    declared: int | None = None
    written: int = 0
    finished: bool = False
    error: Exception | None = None
    lead: int = 8 << 20
    #: Pauses (True) and resumes (False) the download; set by the fetcher.
    throttle: Callable[[bool], None] | None = None
    _waiters: list[Deferred[None]] = attrs.field(factory=list)
    _readers: dict[int, int] = attrs.field(factory=dict)
    _paused: bool = False

    def advance(self, n: int) -> None:
        self.written += n
        self._regulate()
        self._wake()

    def join(self) -> int:
        """Register a reader at offset 0; returns its id."""
        reader = id(object()) ^ len(self._readers)
        while reader in self._readers:
            reader += 1
        self._readers[reader] = 0
        return reader

    def reached(self, reader: int, offset: int) -> None:
        self._readers[reader] = offset
        self._regulate()

    def leave(self, reader: int) -> None:
        self._readers.pop(reader, None)
        self._regulate()

    def _regulate(self) -> None:
        if self.throttle is None:
            return
        lag = self.written - min(self._readers.values()) if self._readers and not self.finished else 0
        if not self._paused and lag > self.lead:
            self._paused = True
            self.throttle(True)
        elif self._paused and lag <= self.lead // 2:
            self._paused = False
            self.throttle(False)

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
