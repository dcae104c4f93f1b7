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
from typing import Any

import attrs
import txredisapi
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from athens.module import ModuleVersion
from athens.singleflight.interface import ILockServer
from athens.singleflight.polling import PollingLock
from athens.storage.redis import _cmd, _eval

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


@implementer(ILockServer)
@attrs.define
class RedisLockServer:
    """A claim is a random token; the lock is ``SET lock:<module>@<version> token NX PX ttl``."""

    redis: Any
    #: Lifetime of a lock nobody renews (a dead holder), seconds.
    ttl: float = 900.0
    prefix: str = "athens:"

    def _key(self, what: ModuleVersion | str) -> bytes:
        return f"{self.prefix}lock:{what}".encode()

    def join(self, what: ModuleVersion) -> Deferred[_Claim]:
        return succeed(_Claim(self._key(what), secrets.token_hex(16).encode()))

    def turn(self, ticket: _Claim) -> Deferred[bool]:
        taken = ensureDeferred(_cmd(self.redis, "SET", ticket.key, ticket.token, "NX", "PX", int(self.ttl * 1000)))
        return taken.addCallback(bool)

    def renew(self, ticket: _Claim) -> Deferred[bool]:
        return ensureDeferred(_eval(self.redis, _RENEW, [ticket.key], [ticket.token, str(int(self.ttl * 1000))])
                              ).addCallback(bool)

    def leave(self, ticket: _Claim) -> Deferred[None]:
        return ensureDeferred(_eval(self.redis, _RELEASE, [ticket.key], [ticket.token])).addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        return maybeDeferred(self.redis.disconnect).addCallback(lambda _: None)


@attrs.frozen
class _Claim:
    key: bytes
    token: bytes


def redis_lock(redis: Any, clock: IReactorTime, ttl: float = 900.0, wait: float = 900.0, poll: float = 0.2,
               prefix: str = "athens:", retries: int = 10) -> PollingLock:
    """The lock of ``SingleFlightType = "redis"`` (and ``"redis-sentinel"``)."""
    return PollingLock(RedisLockServer(redis, ttl, prefix), clock, wait=wait, poll=poll, retries=retries)
