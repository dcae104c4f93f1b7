"""
A lock per module version in Redis, so that several nodes fetch it once.

The holder sets ``lock:<module>@<version>`` to a random token with a TTL and
renews it while its fetch runs; only the holder (same token) may renew or
release it.  A node that dies holding it blocks the others for at most the
TTL.  The others wait while the lock is held, then find the version stored
by the holder (the stash checks storage before it fetches).
"""

from __future__ import annotations

import secrets
from typing import Any, Awaitable, Callable, TypeVar

import attrs
import txredisapi
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from athens.fetch.interface import OriginTimeout
from athens.module import ModuleVersion
from athens.storage.interface import StorageUnavailable
from athens.storage.redis import _cmd, _eval

log = Logger()
T = TypeVar("T")

_RENEW = b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class _BinarySentinelProtocol(txredisapi.SentinelRedisProtocol):
    """txredisapi compares the ROLE reply with str: decode it when the connection is binary."""

    def role(self) -> Any:
        return super().role().addCallback(lambda reply: [r.decode() if isinstance(r, bytes) else r for r in reply])


class _BinarySentinelFactory(txredisapi.SentinelConnectionFactory):
    protocol = _BinarySentinelProtocol


def connect_sentinel(endpoints: tuple[str, ...], master: str, sentinel_password: str, password: str,
                     timeout: float, db: int = 0) -> Any:
    """The master Redis behind Sentinel (``SingleFlightType = "redis-sentinel"``)."""
    from athens.storage.redis import parse_endpoint

    sentinel = txredisapi.Sentinel(
        [parse_endpoint(e) for e in endpoints], password=sentinel_password or None,
        connectTimeout=timeout, replyTimeout=timeout,
    )
    # Binary-safe on the data connection; discovery talks text to the sentinels.
    return sentinel.master_for(master, factory_class=_BinarySentinelFactory, dbid=db or None, poolsize=4,
                               password=password or None,
                               charset=None, convertNumbers=False, replyTimeout=timeout)


@attrs.define
class RedisLock:
    redis: Any
    clock: Any
    #: Lifetime of a lock nobody renews (a dead holder), seconds.
    ttl: float = 900.0
    #: How long a node waits for another's fetch before giving up (504), seconds.
    wait: float = 900.0
    poll: float = 0.2
    prefix: str = "athens:"
    #: Attempts of a lock command while Redis is unreachable (``LockConfig.MaxRetries``).
    retries: int = 10

    def _key(self, what: ModuleVersion) -> bytes:
        return f"{self.prefix}lock:{what}".encode()

    async def run(self, what: ModuleVersion, first: Callable[[], Awaitable[bool]], call: Callable[[], Awaitable[T]]) -> T | None:
        """
        Run ``call`` holding the lock for ``what``.  ``first`` is asked after
        each wait whether the work is done already (another node stored it);
        if so, None is returned without running ``call``.
        """
        key = self._key(what)
        token = secrets.token_hex(16).encode()
        deadline = self.clock.seconds() + self.wait
        while True:
            if await self._acquire(key, token):
                break
            if self.clock.seconds() > deadline:
                raise OriginTimeout(f"{what} is being fetched by another node for over {self.wait:g}s")
            await deferLater(self.clock, self.poll, lambda: None)
            if await first():
                return None
        renewal = LoopingCall(self._renew, key, token)
        renewal.clock = self.clock
        renewal.start(max(self.ttl / 3, 0.05), now=False)
        try:
            if await first():
                return None
            return await call()
        finally:
            renewal.stop()
            try:
                await _eval(self.redis, _RELEASE, [key], [token])
            except Exception as e:  # it expires anyway
                log.warn("could not release the lock for {what}: {error}", what=str(what), error=str(e))

    async def _acquire(self, key: bytes, token: bytes) -> bool:
        for attempt in range(self.retries):
            try:
                return bool(await _cmd(self.redis, "SET", key, token, "NX", "PX", int(self.ttl * 1000)))
            except StorageUnavailable:
                if attempt == self.retries - 1:
                    raise
                await deferLater(self.clock, min(0.1 * 2**attempt, 2.0), lambda: None)
        return False

    def _renew(self, key: bytes, token: bytes) -> Any:
        d = self.redis.eval(_RENEW, [key], [token, str(int(self.ttl * 1000))])
        d.addErrback(lambda f: log.warn("could not renew {key}: {error}", key=key.decode(), error=f.getErrorMessage()))
        return None
