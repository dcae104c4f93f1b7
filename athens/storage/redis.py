"""
Redis storage: one cache shared by many proxy nodes.

Keys (all under ``prefix``):

- ``v:<module>@<version>``: a hash with ``info``, ``mod``, ``size``, ``blob``, ``chunks``
- ``b:<blob>:<n>``: the zip in 1 MiB chunks, so no value is huge and reads stream
- ``m:<module>``: the set of a module's versions; ``catalog``: a sorted set for paging
- ``saved``: a sorted set of every whole version by the time Redis published it
  (``/index``); a store from before it is filled in once, from ``used``
- ``g:<module>@<version>``: a go.mod-only version, a hash with ``mod`` (and ``info``);
  the publish of the whole version removes it in the same script

A save writes its chunks under a fresh blob id with an expiry, then one Lua
script checks every chunk is there and publishes the version (hash, set,
catalog, chunks made persistent) at once: a reader sees all of a version or
none, and what a failed or crashed save wrote expires by itself.
Binary-safe: ``charset=None``, no number conversion; connect and reply
timeouts are set, and a store that is down answers :class:`StorageUnavailable`.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, AsyncIterable, AsyncIterator

import attrs
import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectError, ConnectionLost, TimeoutError
from zope.interface import implementer

from athens.module import ModuleVersion
from athens.storage.interface import (CatalogPage, IndexLine, IStorage, ModChanged, NotFound, StorageError,
                                     StorageUnavailable, rechunk, sized)
from athens.storage.summary import IStorageSummary, Summary, count_catalog

CHUNK = 1 << 20
#: Chunks of a save not yet published expire after this (a crashed writer leaves nothing for long).
PENDING_TTL = 24 * 3600

_PUBLISH = b"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local info = ARGV[1]
if redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('HGET', KEYS[4], 'mod') ~= ARGV[2] then return -2 end
  info = redis.call('HGET', KEYS[4], 'info') or info
end
local count = tonumber(ARGV[5])
for i = 0, count - 1 do
  if redis.call('EXISTS', ARGV[8] .. i) == 0 then return -1 end
end
for i = 0, count - 1 do redis.call('PERSIST', ARGV[8] .. i) end
redis.call('HSET', KEYS[1], 'info', info, 'mod', ARGV[2], 'size', ARGV[3], 'blob', ARGV[4], 'chunks', ARGV[5],
           'used', ARGV[9])
redis.call('DEL', KEYS[4])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], 0, ARGV[7])
local now = redis.call('TIME')
redis.call('ZADD', KEYS[5], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[7])
return 1
"""

#: Versions published before ``saved`` existed get their last use (the save, if never used since), once.
_BACKFILL_SAVED = b"""
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if not redis.call('ZSCORE', KEYS[2], member) then
    local sep = string.find(member, '\\0', 1, true)
    local used = redis.call('HGET', ARGV[1] .. string.sub(member, 1, sep - 1) .. '@' .. string.sub(member, sep + 1), 'used')
    redis.call('ZADD', KEYS[2], tonumber(used or '0') or 0, member)
  end
end
redis.call('SET', KEYS[3], '1')
return 1
"""

_TOUCH = b"if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'used', ARGV[1]) end return 0"

_SAVE_MOD = b"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'mod', ARGV[1])
  if ARGV[2] == '1' then redis.call('HSET', KEYS[2], 'info', ARGV[3]) end
  return 1
end
if ARGV[2] == '1' then return redis.call('HSETNX', KEYS[2], 'info', ARGV[3]) end
return 0
"""

#: A field of the whole version, or else of the go.mod-only one: one round trip.
_FIELD = b"return redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[2], ARGV[1])"

_DELETE = b"""
local blob = redis.call('HGET', KEYS[1], 'blob')
if not blob then
  if redis.call('DEL', KEYS[5]) == 0 then return 0 end
  redis.call('INCR', KEYS[4])
  return 1
end
local count = tonumber(redis.call('HGET', KEYS[1], 'chunks'))
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[2])
for i = 0, count - 1 do redis.call('DEL', ARGV[3] .. blob .. ':' .. i) end
redis.call('INCR', KEYS[4])
return 1
"""

_DOWN = (txredisapi.ConnectionError, ConnectError, ConnectionLost, TimeoutError, txredisapi.TimeoutError,
         defer.TimeoutError, defer.CancelledError)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (Athens' form; ``redis://`` accepted too)."""
    text = endpoint.removeprefix("redis://").rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def connect(endpoint: str, password: str = "", poolsize: int = 10, timeout: float = 10.0) -> Any:
    host, port = parse_endpoint(endpoint)
    pool = txredisapi.lazyConnectionPool(
        host, port, poolsize=poolsize, reconnect=True, charset=None, convertNumbers=False,
        password=password or None, connectTimeout=timeout, replyTimeout=timeout,
    )
    watch_failures(pool)
    return pool


def watch_failures(pool: Any) -> None:
    """Note a failed connection attempt (a retry scheduled), so that commands fail at once while none is up."""
    factory = getattr(pool, "_factory", None)
    if factory is None:
        return
    retry_delay = factory.retryDelay

    def failed_then_retry(attempt: int) -> float:
        factory._athens_failed = True
        return float(retry_delay(attempt))

    factory.retryDelay = failed_then_retry


@attrs.define
class RedisBlob:
    redis: Any
    keys: list[bytes]
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        for key in self.keys:
            chunk = await _cmd(self.redis, "GET", key)
            if chunk is None:
                raise StorageError("a zip chunk disappeared while it was read (the version was deleted)")
            yield chunk

    def close(self) -> None:
        pass


#: No Redis command waits longer than this, whatever state the pool is in.
COMMAND_TIMEOUT = 30.0
#: Seconds a command waits for a first connection (a store that has never answered yet).
CONNECT_WAIT = 3.0


def _admit(redis: Any, timeout: float | None) -> float | None:
    """
    How long a command may wait.  Once the pool has worked, or a connection
    attempt has failed, fail at once while it has no connection, rather than
    queue the command until Redis is back (the client gets its 503 now,
    whether Redis went down or never came up); before any of that, wait for a
    first connection briefly, not for the whole command timeout.
    """
    factory = getattr(redis, "_factory", None)
    if getattr(factory, "size", 1) != 0:  # (the handler proxies unknown names)
        return timeout
    if vars(redis).get("_athens_worked"):
        raise StorageUnavailable("redis: connection lost (reconnecting)")
    if vars(factory).get("_athens_failed"):
        raise StorageUnavailable("redis: cannot connect (retrying)")
    return min(timeout or COMMAND_TIMEOUT, CONNECT_WAIT)


async def _cmd(redis: Any, *args: Any, timeout: float | None = None) -> Any:
    wait = _admit(redis, timeout)
    result = await _call(redis.execute_command(*args), wait)
    redis._athens_worked = True
    return result


async def _eval(redis: Any, script: bytes, keys: list[bytes], args: list[Any]) -> Any:
    wait = _admit(redis, None)
    result = await _call(redis.eval(script, keys, args), wait)
    redis._athens_worked = True
    return result


async def _call(d: Deferred[Any], timeout: float | None = None) -> Any:
    from twisted.internet import reactor

    limit = timeout or COMMAND_TIMEOUT
    d.addTimeout(limit, reactor)
    try:
        return await d
    except defer.TimeoutError:
        raise StorageUnavailable(f"redis: no answer within {limit:g}s") from None
    except _DOWN as e:
        raise StorageUnavailable(f"redis: {e or type(e).__name__}") from None
    except txredisapi.ResponseError as e:
        raise StorageError(f"redis refused: {e}") from None


@implementer(IStorage, IStorageSummary)
@attrs.define
class RedisStorage:
    redis: Any
    prefix: str = "athens:"
    name = "redis"
    _backfilled: bool = False

    def _key(self, *parts: str) -> bytes:
        return (self.prefix + ":".join(parts)).encode()

    def _vkey(self, module: str, version: str) -> bytes:
        return self._key("v", f"{module}@{version}")

    def _gkey(self, module: str, version: str) -> bytes:
        return self._key("g", f"{module}@{version}")

    def _meta(self, module: str, version: str) -> Deferred[dict[bytes, bytes]]:
        async def get() -> dict[bytes, bytes]:
            values = await _cmd(self.redis, "HGETALL", self._vkey(module, version))
            if not values:
                raise NotFound(f"{module}@{version}: not found")
            return dict(zip(values[::2], values[1::2]))

        return ensureDeferred(get())

    def list(self, module: str) -> Deferred[list[str]]:
        async def members() -> list[str]:
            return [v.decode() for v in await _cmd(self.redis, "SMEMBERS", self._key("m", module))]

        return ensureDeferred(members())

    def info(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._small(module, version, b"info"))

    def go_mod(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._small(module, version, b"mod"))

    async def _small(self, module: str, version: str, field: bytes) -> bytes:
        value = await _eval(self.redis, _FIELD, [self._vkey(module, version), self._gkey(module, version)], [field])
        if value is None:
            raise NotFound(f"{module}@{version}: not found")
        return bytes(value)

    async def _field(self, module: str, version: str, field: bytes) -> bytes:
        value = await _cmd(self.redis, "HGET", self._vkey(module, version), field)
        if value is None:
            raise NotFound(f"{module}@{version}: not found")
        return bytes(value)

    def zip(self, module: str, version: str) -> Deferred[RedisBlob]:
        async def open_zip() -> RedisBlob:
            meta = await self._meta(module, version)
            blob = meta[b"blob"].decode()
            keys = [self._key("b", blob, str(i)) for i in range(int(meta[b"chunks"]))]
            return RedisBlob(self.redis, keys, int(meta[b"size"]))

        return ensureDeferred(open_zip())

    def exists(self, module: str, version: str) -> Deferred[bool]:
        async def check() -> bool:
            return bool(await _cmd(self.redis, "EXISTS", self._vkey(module, version)))

        return ensureDeferred(check())

    def save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        return ensureDeferred(self._save(module, version, info, mod, zip))

    async def _save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> bool:
        if await self.exists(module, version):
            return False
        blob = secrets.token_hex(12)
        count = size = 0
        try:
            async for chunk in rechunk(sized(zip), CHUNK):
                await _cmd(self.redis, "SET", self._key("b", blob, str(count)), chunk, "EX", PENDING_TTL)
                count += 1
                size += len(chunk)
            published = await _eval(
                self.redis,
                _PUBLISH,
                [self._vkey(module, version), self._key("m", module), self._key("catalog"),
                 self._gkey(module, version), self._key("saved")],
                [info, mod, str(size), blob, str(count), version, f"{module}\x00{version}", self._key("b", blob, ""),
                 repr(time.time())],
            )
        except BaseException:
            await self._drop_chunks(blob, count)
            raise
        if published == -1:
            await self._drop_chunks(blob, count)
            raise StorageError(f"{module}@{version}: chunks expired before the save finished")
        if published in (0, -2):
            await self._drop_chunks(blob, count)
            if published == -2:
                raise ModChanged(module, version)
            return False
        return True

    def save_mod(self, module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        async def store() -> bool:
            added = await _eval(self.redis, _SAVE_MOD, [self._vkey(module, version), self._gkey(module, version)],
                                [mod, "0" if info is None else "1", info or b""])
            return bool(added)

        return ensureDeferred(store())

    async def _drop_chunks(self, blob: str, count: int) -> None:
        if count:
            try:
                await _cmd(self.redis, "DEL", *[self._key("b", blob, str(i)) for i in range(count)], timeout=5)
            except Exception:
                pass  # they expire anyway

    def delete(self, module: str, version: str) -> Deferred[None]:
        async def remove() -> None:
            done = await _eval(
                self.redis,
                _DELETE,
                [self._vkey(module, version), self._key("m", module), self._key("catalog"), self._key("deletions"),
                 self._gkey(module, version), self._key("saved")],
                [version, f"{module}\x00{version}", self._key("b", "")],
            )
            if not done:
                raise NotFound(f"{module}@{version}: not found")

        return ensureDeferred(remove())

    def deletions(self) -> Deferred[str]:
        async def read() -> str:
            value = await _cmd(self.redis, "GET", self._key("deletions"))
            return value.decode() if value else ""

        return ensureDeferred(read())

    def catalog(self, token: str, limit: int) -> Deferred[CatalogPage]:
        async def page() -> CatalogPage:
            start = b"-"
            if token:
                path, _, version = token.rpartition("@")
                start = b"(" + f"{path}\x00{version}".encode()
            limit_ = max(limit, 1)
            members = await _cmd(self.redis, 
                "ZRANGEBYLEX", self._key("catalog"), start, b"+", "LIMIT", 0, limit_ + 1)
            items = [ModuleVersion(*m.decode().split("\x00", 1)) for m in members[:limit_]]
            more = len(members) > limit_
            return CatalogPage(items, str(items[-1]) if more else "")

        return ensureDeferred(page())

    def index(self, since: float, limit: int) -> Deferred[list[IndexLine]]:
        async def lines() -> list[IndexLine]:
            if not self._backfilled:
                await _eval(self.redis, _BACKFILL_SAVED,
                            [self._key("catalog"), self._key("saved"), self._key("saved-complete")],
                            [self._key("v", "").decode()])
                self._backfilled = True
            if limit <= 0:
                return []
            found = await _cmd(self.redis, "ZRANGEBYSCORE", self._key("saved"), repr(float(since)), "+inf",
                               "WITHSCORES", "LIMIT", 0, limit)
            out = []
            for member, score in zip(found[::2], found[1::2]):
                path, _, version = member.decode().partition("\x00")
                out.append(IndexLine(path, version, float(score)))
            return out

        return ensureDeferred(lines())

    def touch(self, module: str, version: str) -> Deferred[None]:
        async def used() -> None:
            await _eval(self.redis, _TOUCH, [self._vkey(module, version)], [repr(time.time())])

        return ensureDeferred(used())

    def last_used(self, module: str, version: str) -> Deferred[float]:
        async def when() -> float:
            return float(await self._field(module, version, b"used"))

        return ensureDeferred(when())

    def summary(self) -> Deferred[Summary]:
        """The catalog counted (one sorted set, paged); the size is the server's, which may hold more than this store."""

        async def count() -> Summary:
            counted = await count_catalog(self)
            info = await _cmd(self.redis, "INFO", "memory")
            text = info.decode("ascii", "replace") if isinstance(info, bytes) else str(info)
            used = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                         if line.startswith("used_memory:")), "")
            size = int(used) if used.isdigit() else None
            return attrs.evolve(counted, size=size, size_of="memory the whole Redis server uses")

        return ensureDeferred(count())

    def ping(self) -> Deferred[None]:
        async def pong() -> None:
            await _cmd(self.redis, "PING")

        return ensureDeferred(pong())

    def close(self) -> Deferred[None]:
        return ensureDeferred(_disconnect(self.redis))


async def _disconnect(redis: Any) -> None:
    try:
        await _call(redis.disconnect(), 5)
    except Exception:
        pass

