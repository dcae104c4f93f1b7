"""
Where the organisation's checksum database keeps its log: records and stored hashes.

A store knows nothing of Merkle trees; it keeps records by id, hashes by
stored hash index, and appends one record with its hashes atomically, and
only if the log still has the size the appender computed them for (a
compare-and-set), so that any number of writers in any number of processes
and nodes build one tree.  What is written is never changed.
"""

from __future__ import annotations

from typing import Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Attribute, Interface, implementer

from athens.storage.interface import StorageError


class LogCorrupt(StorageError):
    """The store lacks a record or hash the log's size says it holds."""


class ILogStore(Interface):
    name = Attribute("Short backend name for logs (memory, disk, redis, postgres).")

    def size() -> Deferred[int]:
        """How many records the log holds."""

    def lookup(key: str) -> Deferred[int | None]:
        """The id of the record for ``key`` (``module@version``), or None."""

    def records(start: int, count: int) -> Deferred[list[bytes]]:
        """The texts of records ``start`` to ``start + count - 1``; LogCorrupt if one is missing."""

    def hashes(indexes: Sequence[int]) -> Deferred[list[bytes]]:
        """The stored hashes at ``indexes``, in that order; LogCorrupt if one is missing."""

    def append(key: str, text: bytes, size: int, hashes: Sequence[bytes]) -> Deferred[tuple[int, bool] | None]:
        """
        In one step: if ``key`` is logged already, ``(its id, False)``, and
        nothing is written; else, if the log holds exactly ``size`` records,
        record ``size`` is ``text``, ``hashes`` are stored from
        ``stored_hash_index(0, size)`` on, and ``(size, True)`` is returned;
        else None (another writer appended first).
        """

    def close() -> Deferred[None]:
        """Release connections at shutdown."""


@implementer(ILogStore)
@attrs.define
class MemoryLogStore:
    """In the process: for development and tests (``StorageType = "memory"``)."""

    name = "memory"
    _records: list[bytes] = attrs.field(factory=list)
    _ids: dict[str, int] = attrs.field(factory=dict)
    _hashes: list[bytes] = attrs.field(factory=list)

    def size(self) -> Deferred[int]:
        return succeed(len(self._records))

    def lookup(self, key: str) -> Deferred[int | None]:
        return succeed(self._ids.get(key))

    def records(self, start: int, count: int) -> Deferred[list[bytes]]:
        if start < 0 or start + count > len(self._records):
            return fail(LogCorrupt(f"records {start}..{start + count - 1} are not all in the log"))
        return succeed(self._records[start : start + count])

    def hashes(self, indexes: Sequence[int]) -> Deferred[list[bytes]]:
        if any(not 0 <= i < len(self._hashes) for i in indexes):
            return fail(LogCorrupt("a stored hash is missing"))
        return succeed([self._hashes[i] for i in indexes])

    def append(self, key: str, text: bytes, size: int, hashes: Sequence[bytes]) -> Deferred[tuple[int, bool] | None]:
        if key in self._ids:
            return succeed((self._ids[key], False))
        if size != len(self._records):
            return succeed(None)
        self._records.append(text)
        self._hashes.extend(hashes)
        self._ids[key] = size
        return succeed((size, True))

    def close(self) -> Deferred[None]:
        return succeed(None)
