"""
The log in Redis, beside the shared store (``StorageType = "redis"``).

Keys under ``<prefix>sumdb:<name>:``: ``size`` (the record count), ``ids``
(a hash ``module@version`` to id), ``records`` (a hash id to text) and
``hashes`` (a hash stored hash index to hash).  An append is one Lua script:
it checks the key and the size and writes the record, its hashes, its id and
the new size together, or nothing.  The log is as durable as the Redis
behind it: run it with persistence (AOF ``appendfsync always`` or
``everysec``), as for the module cache.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from athens.storage.redis import _cmd, _disconnect, _eval
from athens.sumdb._store import ILogStore, LogCorrupt
from athens.sumdb._tlog import stored_hash_index

_APPEND = b"""
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {existing, 0} end
local size = tonumber(redis.call('GET', KEYS[1]) or '0')
if size ~= tonumber(ARGV[3]) then return {-1, 0} end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
local first = tonumber(ARGV[4])
for i = 5, #ARGV do redis.call('HSET', KEYS[4], tostring(first + i - 5), ARGV[i]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SET', KEYS[1], tostring(size + 1))
return {ARGV[3], 1}
"""


@implementer(ILogStore)
@attrs.define
class RedisLogStore:
    redis: Any
    db: str
    prefix: str = "athens:"
    name = "redis"

    def _key(self, what: str) -> bytes:
        return f"{self.prefix}sumdb:{self.db}:{what}".encode()

    def size(self) -> Deferred[int]:
        async def read() -> int:
            return int(await _cmd(self.redis, "GET", self._key("size")) or 0)

        return ensureDeferred(read())

    def lookup(self, key: str) -> Deferred[int | None]:
        async def read() -> int | None:
            found = await _cmd(self.redis, "HGET", self._key("ids"), key.encode())
            return None if found is None else int(found)

        return ensureDeferred(read())

    def records(self, start: int, count: int) -> Deferred[list[bytes]]:
        async def read() -> list[bytes]:
            if count <= 0:
                return []
            found = await _cmd(self.redis, "HMGET", self._key("records"), *range(start, start + count))
            if any(r is None for r in found):
                raise LogCorrupt(f"records {start}..{start + count - 1} are not all in the log")
            return list(found)

        return ensureDeferred(read())

    def hashes(self, indexes: Sequence[int]) -> Deferred[list[bytes]]:
        async def read() -> list[bytes]:
            if not indexes:
                return []
            found = await _cmd(self.redis, "HMGET", self._key("hashes"), *indexes)
            if any(h is None for h in found):
                raise LogCorrupt("a stored hash is missing")
            return list(found)

        return ensureDeferred(read())

    def append(self, key: str, text: bytes, size: int, hashes: Sequence[bytes]) -> Deferred[tuple[int, bool] | None]:
        async def write() -> tuple[int, bool] | None:
            keys = [self._key("size"), self._key("ids"), self._key("records"), self._key("hashes")]
            result = await _eval(self.redis, _APPEND, keys,
                                 [key.encode(), text, str(size), str(stored_hash_index(0, size)), *hashes])
            record_id, added = int(result[0]), int(result[1]) == 1
            return None if record_id < 0 else (record_id, added)

        return ensureDeferred(write())

    def close(self) -> Deferred[None]:
        return ensureDeferred(_disconnect(self.redis))
