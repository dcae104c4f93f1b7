"""
The one interface every storage backend implements.

Every method returns a Deferred.  A version is saved all or nothing: no
reader ever sees part of one, and a version, once stored, never changes
(a second save of it is refused and reported, not applied).
"""

from __future__ import annotations

from typing import AsyncIterable, AsyncIterator, Iterable, Protocol

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from athens.modzip import MAX_ZIP_FILE
from athens.module import ModuleVersion


class StorageError(Exception):
    """Storage failed; the request cannot be answered from it."""


class NotFound(StorageError):
    """The module version (or module) is not stored."""


class StorageUnavailable(StorageError):
    """The store is down or unreachable (answered with 503)."""


class ModChanged(StorageError):
    """A save brought a go.mod other than the one stored for that version: the stored one is kept."""

    def __init__(self, module: str, version: str) -> None:
        super().__init__(f"{module}@{version}: the origin's go.mod differs from the stored one "
                         "(delete the version to fetch it again)")


class Blob(Protocol):
    """A stored zip being read: its size, then its bytes in chunks."""

    size: int

    def chunks(self) -> AsyncIterator[bytes]:
        """The content, once, in order; stops early if the reader stops iterating."""

    def close(self) -> None:
        """Release what reading holds (file handles, connections); idempotent."""


@attrs.frozen
class IndexLine:
    """A whole version and when this store saved it (Athens' ``/index`` line)."""

    path: str
    version: str
    #: Epoch seconds.
    saved: float


@attrs.frozen
class CatalogPage:
    """One page of the catalog, in ``(path, version)`` order."""

    items: list[ModuleVersion]
    #: Pass back to get the next page; ``""`` when this page is the last.
    next_token: str


class IStorage(Interface):
    name = Attribute("Short backend name for logs and /readyz (memory, disk, ...).")

    def list(module: str) -> Deferred[list[str]]:
        """The stored versions of ``module`` (unsorted); ``[]`` if none."""

    def info(module: str, version: str) -> Deferred[bytes]:
        """The ``.info`` JSON; fails with NotFound."""

    def go_mod(module: str, version: str) -> Deferred[bytes]:
        """The ``go.mod`` bytes; fails with NotFound."""

    def zip(module: str, version: str) -> Deferred[Blob]:
        """The source zip as a Blob; fails with NotFound. The caller closes it."""

    def exists(module: str, version: str) -> Deferred[bool]:
        """Whether the whole version is stored."""

    def save(module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        """
        Store a version all or nothing.  True if stored; False if the version
        was already there (it is kept unchanged).  If ``zip`` fails or exceeds
        the size limit, nothing is stored and the error propagates.  A
        go.mod-only version is completed (its stored ``.info`` kept); a
        different go.mod is refused with :class:`ModChanged`.
        """

    def save_mod(module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        """
        Store the ``go.mod`` (and ``.info``, when known) of a version whose zip
        is not stored: the go command needs only go.mod for much of a module
        graph.  Such a version is served by go_mod() (and info()), not counted
        by exists(), list() or catalog(), and completed by a later save().
        What is stored is never changed; True if something was added (the
        version, or its missing ``.info``).
        """

    def delete(module: str, version: str) -> Deferred[None]:
        """Remove a version at once, whole or go.mod-only; fails with NotFound."""

    def catalog(token: str, limit: int) -> Deferred[CatalogPage]:
        """Up to ``limit`` stored versions after ``token`` (``""``: from the start)."""

    def index(since: float, limit: int) -> Deferred[list[IndexLine]]:
        """
        Up to ``limit`` whole versions saved at or after ``since`` (epoch
        seconds), oldest save first, ties in (path, version) order: what
        mirrors and index consumers page through, as Athens' ``/index``.  A
        go.mod-only version appears when a save completes it.
        """

    def touch(module: str, version: str) -> Deferred[None]:
        """Record that the version was used now (for garbage collection); nothing if it is not stored."""

    def last_used(module: str, version: str) -> Deferred[float]:
        """When the version was last used (epoch seconds; its save if never); fails with NotFound."""

    def deletions() -> Deferred[str]:
        """
        A token that changes whenever a version is deleted, by any process or
        node: what caches in front of the store (the hit path) poll to drop
        what they hold.  Saves do not change it.
        """

    def ping() -> Deferred[None]:
        """Fails unless the store can serve requests now (readiness)."""

    def close() -> Deferred[None]:
        """Release connections and pools at shutdown."""


class ISweep(Interface):
    """A store where a killed save can leave something behind (invisible to readers): ``gc`` cleans it."""

    def sweep(older_than: float | None = None) -> Deferred[list[str]]:
        """Remove what killed saves left, older than ``older_than`` seconds (None: the store's rule); what was removed."""


#: The largest zip the go command accepts (the module zip rules' limit); storage refuses anything larger.
MAX_ZIP_SIZE = MAX_ZIP_FILE


class ZipTooLarge(StorageError):
    """The zip stream passed :data:`MAX_ZIP_SIZE`."""


async def sized(zip: AsyncIterable[bytes], limit: int | None = None) -> AsyncIterator[bytes]:
    """Pass chunks through, failing as soon as the total passes ``limit`` (default :data:`MAX_ZIP_SIZE`)."""
    limit = MAX_ZIP_SIZE if limit is None else limit
    total = 0
    async for chunk in zip:
        total += len(chunk)
        if total > limit:
            raise ZipTooLarge(f"zip larger than {limit} bytes")
        yield chunk


async def rechunk(stream: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup a stream into chunks of exactly ``size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    async for piece in stream:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def index_of(lines: Iterable[IndexLine], since: float, limit: int) -> list[IndexLine]:
    """Cut :meth:`IStorage.index`'s answer from every stored version's save time (stores without an ordered index)."""
    chosen = sorted((line for line in lines if line.saved >= since), key=lambda i: (i.saved, i.path, i.version))
    return chosen[: max(limit, 0)]


def page(items: Iterable[ModuleVersion], token: str, limit: int) -> CatalogPage:
    """
    Cut one catalog page from every stored version.  The token is the last
    ``path@version`` served: ``@`` never occurs in a module path.
    """
    after = tuple(token.rsplit("@", 1)) if token else ("",)
    ordered = sorted((i.path, i.version) for i in items)
    rest = [ModuleVersion(p, v) for p, v in ordered if (p, v) > after]
    chosen = rest[: max(limit, 1)]
    more = len(rest) > len(chosen)
    return CatalogPage(chosen, str(chosen[-1]) if more else "")
