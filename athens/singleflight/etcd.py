"""
A lock per module version in etcd (``SingleFlightType = "etcd"``), over etcd's
v3 HTTP/JSON gateway: nothing but HTTP (treq) is needed.

The claims are the ones of etcd's own mutex (``clientv3/concurrency``, which
Athens uses): a claim is the key ``<module>@<version>/<lease id in hex>``
attached to a lease of its own, and the lock belongs to the claim with the
lowest create revision under ``<module>@<version>/``.  So athens-py and
Athens nodes sharing one etcd take turns on the same locks.  A claim lives as
long as its lease is kept alive: a node that dies (and its claim) is
forgotten after the TTL; leaving revokes the lease, which deletes that
node's claim and nobody else's.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from zope.interface import implementer

from athens.module import ModuleVersion
from athens.singleflight.interface import ILockServer
from athens.singleflight.polling import PollingLock
from athens.storage.interface import StorageError, StorageUnavailable

#: Seconds a claim of a node that stopped renewing lives (etcd's concurrency sessions, as in Athens).
TTL = 60
#: etcd's answers here are a few hundred bytes.
MAX_ANSWER = 1 << 20


class EtcdError(StorageError):
    """etcd answered, but not as the protocol says (a broken or hostile server)."""


def endpoint_urls(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """Athens' ``host:port`` endpoints (or URLs) as base URLs of the HTTP gateway."""
    urls = []
    for endpoint in endpoints:
        text = endpoint.strip().rstrip("/")
        if not text:
            continue
        url = text if "://" in text else "http://" + text
        scheme, _, rest = url.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"{endpoint!r} is not host:port or http(s)://host:port")
        urls.append(url)
    if not urls:
        raise ValueError("no endpoint")
    return tuple(urls)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (whose last byte is ``/``)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


@attrs.define
class EtcdGateway:
    """
    POSTs JSON to etcd's gateway, going to the next endpoint when one cannot
    be reached.  Every answer is checked and bounded; an unreachable cluster
    is StorageUnavailable (503).
    """

    urls: tuple[str, ...]
    http: HTTPClient
    clock: IReactorTime
    #: Seconds a call may take on one endpoint.
    timeout: float = 15.0
    pool: HTTPConnectionPool | None = None
    #: Index of the endpoint that answered last: tried first next time.
    _current: int = 0

    @classmethod
    def connect(cls, urls: tuple[str, ...], reactor: Any, timeout: float = 15.0) -> "EtcdGateway":
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        return cls(urls, HTTPClient(Agent(reactor, pool=pool)), reactor, timeout, pool)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reasons = []
        for i in range(len(self.urls)):
            index = (self._current + i) % len(self.urls)
            url = self.urls[index] + path
            try:
                answer = await self._post(url, body)
            except _Unreachable as e:
                reasons.append(f"{self.urls[index]}: {e}")
                continue
            self._current = index
            return answer
        raise StorageUnavailable(f"etcd unreachable ({'; '.join(reasons)})")

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async def exchange() -> tuple[int, bytes]:
            response = await self.http.post(url, json=body, timeout=self.timeout)
            chunks: list[bytes] = []
            size = 0

            def collect(data: bytes) -> None:
                nonlocal size
                chunks.append(data)
                size += len(data)
                if size > MAX_ANSWER:
                    raise EtcdError(f"etcd sent an answer over {MAX_ANSWER} bytes")

            await treq.collect(response, collect)
            return response.code, b"".join(chunks)

        d = ensureDeferred(exchange())
        d.addTimeout(self.timeout, self.clock)
        try:
            code, data = await d
        except (CancelledError, TimeoutError, ConnectingCancelledError):
            raise _Unreachable(f"no answer within {self.timeout:g}s") from None
        except (ConnectError, DNSLookupError) as e:
            raise _Unreachable(str(e)) from None
        except ResponseFailed as e:
            raise _Unreachable(f"broken connection ({e})") from None
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise _Unreachable(f"answered {code} with something that is not a JSON object") if code >= 500 else \
                EtcdError(f"etcd answered {code} with something that is not a JSON object")
        if code != 200:
            message = str(answer.get("message") or answer.get("error") or "")[:300]
            if code >= 500:  # no leader, shutting down: another member may do
                raise _Unreachable(f"{code} {message}")
            raise EtcdError(f"etcd answered {code}: {message}")
        return answer

    def close(self) -> Deferred[None]:
        return succeed(None) if self.pool is None else self.pool.closeCachedConnections()


class _Unreachable(Exception):
    """This endpoint did not do (the next one may)."""


@attrs.define
class _Claim:
    what: ModuleVersion
    prefix: str
    key: str
    lease: int


def _int(value: Any, what: str) -> int:
    """etcd's 64-bit integers come as JSON strings (and are left out when 0)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise EtcdError(f"etcd sent {what} that is not a number: {str(value)[:50]!r}") from None


def _kvs(answer: dict[str, Any]) -> list[dict[str, Any]]:
    kvs = answer.get("kvs") or []
    if not isinstance(kvs, list) or not all(isinstance(kv, dict) for kv in kvs):
        raise EtcdError("etcd sent a range answer without a list of keys")
    return kvs


def _key_of(kv: dict[str, Any]) -> str:
    try:
        return base64.b64decode(kv.get("key") or "", validate=True).decode()
    except (ValueError, TypeError):
        raise EtcdError("etcd sent a key that is not base64") from None


@implementer(ILockServer)
@attrs.define
class EtcdLockServer:
    gateway: EtcdGateway
    ttl: float = TTL
    #: Before every lock key (tests share one etcd); Athens has none.
    prefix: str = ""

    def join(self, what: ModuleVersion) -> Deferred[_Claim]:
        return ensureDeferred(self._join(what))

    async def _join(self, what: ModuleVersion) -> _Claim:
        granted = await self.gateway.call("/v3/lease/grant", {"TTL": max(1, round(self.ttl))})
        lease = _int(granted.get("ID"), "a lease id")
        if lease <= 0:
            raise EtcdError("etcd granted no lease")
        prefix = f"{self.prefix}{what}/"
        claim = _Claim(what, prefix, f"{prefix}{lease:x}", lease)
        # Put only if absent: a repeat (a retry after a lost answer) leaves the claim where it is in the queue.
        await self.gateway.call("/v3/kv/txn", {
            "compare": [{"key": _b64(claim.key), "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(claim.key), "value": "", "lease": str(lease)}}],
        })
        return claim

    def turn(self, ticket: _Claim) -> Deferred[bool]:
        return ensureDeferred(self._turn(ticket))

    async def _turn(self, claim: _Claim) -> bool:
        """The lock is the oldest claim's (lowest create revision)."""
        answer = await self.gateway.call("/v3/kv/range", {
            "key": _b64(claim.prefix), "range_end": _prefix_end(claim.prefix),
            "sort_order": "ASCEND", "sort_target": "CREATE", "limit": "1", "keys_only": True,
        })
        kvs = _kvs(answer)
        if kvs and _key_of(kvs[0]) == claim.key:
            return True
        if not kvs:  # not even ours: it lapsed (etcd unreachable longer than the TTL): claim again
            await self._requeue(claim)
        return False

    async def _requeue(self, claim: _Claim) -> None:
        fresh = await self._join(claim.what)
        claim.key, claim.lease = fresh.key, fresh.lease

    def renew(self, ticket: _Claim) -> Deferred[bool]:
        return ensureDeferred(self._renew(ticket))

    async def _renew(self, claim: _Claim) -> bool:
        """Keep the lease alive, then check the claim is still there on that lease (nobody deleted it)."""
        answer = await self.gateway.call("/v3/lease/keepalive", {"ID": str(claim.lease)})
        result = answer.get("result")
        if not isinstance(result, dict) or _int(result.get("TTL"), "a TTL") <= 0:
            return False  # the lease is gone: so is the claim
        mine = await self.gateway.call("/v3/kv/range", {"key": _b64(claim.key)})
        kvs = _kvs(mine)
        return bool(kvs) and _int(kvs[0].get("lease"), "a lease id") == claim.lease

    def leave(self, ticket: _Claim) -> Deferred[None]:
        async def revoke() -> None:
            try:
                await self.gateway.call("/v3/lease/revoke", {"ID": str(ticket.lease)})
            except EtcdError:
                pass  # not found: it lapsed already

        return ensureDeferred(revoke())

    def close(self) -> Deferred[None]:
        return self.gateway.close()


def etcd_lock(endpoints: tuple[str, ...], reactor: Any, wait: float = 900.0, timeout: float = 15.0,
              ttl: float = TTL, prefix: str = "", poll: float = 0.2) -> PollingLock:
    """The lock of ``SingleFlightType = "etcd"``; raises ValueError for endpoints that are not host:port."""
    gateway = EtcdGateway.connect(endpoint_urls(endpoints), reactor, timeout)
    return PollingLock(EtcdLockServer(gateway, ttl, prefix), reactor, wait=wait, poll=poll)
