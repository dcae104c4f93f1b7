"""
Bearer tokens for object stores (Google's OAuth tokens, Azure managed
identities): fetched when first needed, shared by every request while
valid, fetched again a few minutes before they expire or when the store
answers 401.  Concurrent requests wait for one fetch, not one each.
"""

from __future__ import annotations

import json
from typing import Awaitable, Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from athens.storage.interface import StorageUnavailable

#: Fetch a new token this many seconds before the old one expires.
MARGIN = 300.0


@attrs.frozen
class Token:
    """An access token and the reactor time it stops being valid."""

    value: str = attrs.field(repr=False)
    expires: float


def parse_token(body: bytes, now: float, where: str) -> Token:
    """An OAuth token answer (``access_token``, ``expires_in``), checked: it comes from the network."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise StorageUnavailable(f"{where}: the token answer is not JSON") from None
    if not isinstance(answer, dict):
        raise StorageUnavailable(f"{where}: the token answer is not a JSON object")
    token = answer.get("access_token")
    if not isinstance(token, str) or not token or not token.isprintable() or len(token) > 16384:
        raise StorageUnavailable(f"{where}: the token answer has no usable access_token")
    try:
        lifetime = float(answer.get("expires_in", 3600))  # Azure's IMDS sends it as a string
    except (TypeError, ValueError):
        raise StorageUnavailable(f"{where}: the token answer's expires_in is not a number") from None
    return Token(token, now + max(0.0, min(lifetime, 86400.0)))


@attrs.define
class CachedToken:
    """One token source's current token."""

    fetch: Callable[[], Awaitable[Token]]
    clock: IReactorTime
    margin: float = MARGIN
    _token: Token | None = None
    _waiting: list[Deferred[str]] | None = None

    def get(self) -> Deferred[str]:
        """The current token, fetching one if there is none or it is about to expire."""
        if self._token is not None and self._token.expires - self.margin > self.clock.seconds():
            return Deferred.fromCoroutine(_value(self._token.value))
        d: Deferred[str] = Deferred()
        if self._waiting is not None:
            self._waiting.append(d)
            return d
        self._waiting = [d]
        ensureDeferred(self.fetch()).addBoth(self._fetched)
        return d

    def _fetched(self, result: Token | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        if isinstance(result, Token):
            self._token = result
        for d in waiting:
            if isinstance(result, Token):
                d.callback(result.value)
            else:
                d.errback(result)

    def expire(self) -> None:
        """Forget the token (the store refused it)."""
        self._token = None


async def _value(value: str) -> str:
    return value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
