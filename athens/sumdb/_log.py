"""
The organisation's checksum database as a log: append records, serve tree heads, tiles and records.

This is the I/O around the pure functions of :mod:`athens.sumdb._tlog`: it
reads what they need from an :class:`ILogStore`, appends through the store's
compare-and-set (retrying when another writer went first), and signs tree
heads with the database's key.  Appends are ordered in this process by a
lock, across nodes by the Redis lock when one is configured; the store's
compare-and-set alone already guarantees one tree.  Records, stored
hashes, record ids and complete tiles never change, so they are cached;
the size is read from the store every time (other processes and nodes append).
"""

from __future__ import annotations

from typing import Awaitable, Callable

import attrs
from twisted.internet.defer import DeferredLock, ensureDeferred
from twisted.logger import Logger

from athens.singleflight.interface import ILock
from athens.storage.interface import NotFound, StorageUnavailable
from athens.sumdb._note import SignerKey
from athens.sumdb._store import ILogStore
from athens.sumdb._tlog import (
    TILE_HEIGHT,
    Tile,
    Tree,
    append_hashes,
    append_indexes,
    format_tree,
    record_hash,
    tile_available,
    tile_indexes,
    tree_hash,
    tree_indexes,
    valid_record_text,
)

log = Logger()

#: Appends lost to other writers in a row before one gives up (503): each lost race means the log grew.
MAX_RACES = 100
#: Cached stored hashes and records (they never change): entries, each.
CACHE_ENTRIES = 200_000
#: Complete tiles kept (they never change): at most 8 KiB each.
TILE_CACHE = 2048


class TileNotFound(NotFound):
    """No such tile in the log as it is now (too far, or a height this database does not serve)."""


@attrs.define
class _Immutable:
    """A bounded cache of values that never change: dropped whole when full, which costs only re-reads."""

    limit: int = CACHE_ENTRIES
    _values: dict[int, bytes] = attrs.field(factory=dict)

    async def read(self, keys: list[int], load: Callable[[list[int]], Awaitable[list[bytes]]]) -> list[bytes]:
        """The values of ``keys``; ``load`` reads the ones not cached, in increasing order."""
        found = {k: self._values[k] for k in keys if k in self._values}
        missing = sorted(set(keys) - found.keys())
        if missing:
            loaded = dict(zip(missing, await load(missing)))
            found.update(loaded)
            if len(self._values) + len(loaded) > self.limit:
                self._values.clear()
            self._values.update(loaded)
        return [found[k] for k in keys]


@attrs.define
class SumLog:
    """A transparency log of go.sum records in the go command's checksum database format, signed with ``signer``."""

    signer: SignerKey
    store: ILogStore
    #: Orders appends across nodes (``SingleFlightType = "redis"``).
    lock: ILock | None = None
    height: int = TILE_HEIGHT
    _local: DeferredLock = attrs.field(factory=DeferredLock)
    _hashes: _Immutable = attrs.field(factory=_Immutable)
    _records: _Immutable = attrs.field(factory=_Immutable)
    _ids: dict[str, int] = attrs.field(factory=dict)
    _tiles: dict[Tile, bytes] = attrs.field(factory=dict)
    #: The last tree head signed here: (size, note).
    _signed: tuple[int, bytes] = (-1, b"")

    @property
    def name(self) -> str:
        return self.signer.name

    async def _read_hashes(self, indexes: list[int]) -> list[bytes]:
        return await self._hashes.read(indexes, lambda missing: self.store.hashes(missing))

    async def record(self, record_id: int) -> bytes:
        """The text of a record."""

        async def load(ids: list[int]) -> list[bytes]:
            return [r for i in ids for r in await self.store.records(i, 1)]

        return (await self._records.read([record_id], load))[0]

    async def lookup(self, module: str, version: str) -> int | None:
        """The id of the record of ``module@version``, or None (a record's id never changes: it is cached)."""
        key = f"{module}@{version}"
        found = self._ids.get(key)
        if found is None:
            found = await self.store.lookup(key)
            if found is not None:
                if len(self._ids) >= CACHE_ENTRIES:
                    self._ids.clear()
                self._ids[key] = found
        return found

    async def head(self) -> Tree:
        """The tree as the store has it now."""
        size = await self.store.size()
        if size < self._signed[0]:
            # A store restored from an older copy, or another database under this name: signing this
            # tree would fork the log for every client that saw the larger one.
            log.error("SECURITY: the checksum database {name} shrank from {was} to {now} records; refusing to sign",
                      name=self.name, was=self._signed[0], now=size, security=True)
            raise StorageUnavailable(f"the checksum database {self.name} shrank from {self._signed[0]} to "
                                     f"{size} records: refusing to sign it")
        return Tree(size, tree_hash(size, await self._read_hashes(tree_indexes(size))))

    async def latest(self) -> bytes:
        """The signed tree head (a note), as ``/latest`` serves it."""
        tree = await self.head()
        if tree.n != self._signed[0]:
            self._signed = (tree.n, self.signer.sign(format_tree(tree)))
        return self._signed[1]

    async def tile(self, tile: Tile) -> bytes:
        """A hash tile (the stored hashes it covers) or a data tile (the records, each followed by a blank line)."""
        if tile.height != self.height:
            raise TileNotFound(f"{tile.path()} is not in the checksum database {self.name}")
        cached = self._tiles.get(tile)
        if cached is not None:
            return cached
        if not tile_available(tile, await self.store.size()):
            raise TileNotFound(f"{tile.path()} is not in the checksum database {self.name}")
        if tile.level == -1:
            start = tile.n << tile.height
            data = b"".join(text + b"\n" for text in await self.store.records(start, tile.width))
        else:
            data = b"".join(await self._read_hashes(tile_indexes(tile)))
        if tile.complete:  # a complete tile never changes
            if len(self._tiles) >= TILE_CACHE:
                self._tiles.clear()
            self._tiles[tile] = data
        return data

    async def append(self, module: str, version: str, text: bytes) -> tuple[int, bool]:
        """
        Log ``text`` as the record of ``module@version`` unless it has one:
        its id, and whether this call added it.  The caller compares the
        logged text with its own (a record never changes).
        """
        if not valid_record_text(text):
            raise ValueError(f"not a record: {text!r}")
        key = f"{module}@{version}"

        async def logged() -> bool:
            return await self.store.lookup(key) is not None

        async def across_nodes() -> tuple[int, bool]:
            if self.lock is None:
                return await self._append(key, text)
            added = await self.lock.run(f"sumdb-append:{self.name}", logged, lambda: self._append(key, text))
            if added is None:  # another node logged it while this one waited
                found = await self.store.lookup(key)
                assert found is not None
                return found, False
            return added  # type: ignore[no-any-return]

        return await self._local.run(lambda: ensureDeferred(across_nodes()))  # type: ignore[no-any-return]

    async def _append(self, key: str, text: bytes) -> tuple[int, bool]:
        leaf = record_hash(text)
        for _ in range(MAX_RACES):
            existing = await self.store.lookup(key)
            if existing is not None:
                return existing, False
            size = await self.store.size()
            new = append_hashes(size, leaf, await self._read_hashes(append_indexes(size)))
            appended = await self.store.append(key, text, size, new)
            if appended is not None:
                return appended
        raise StorageUnavailable(f"the checksum database {self.name} grew under every one of {MAX_RACES} appends")
