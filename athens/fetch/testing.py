"""A fake fetcher for tests of the stash, the list cache and the protocol (shipped, like treq.testing)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from athens.fetch.interface import Fetched, IFetcher, Listing, OriginError, OriginNotFound


@implementer(IFetcher)
@attrs.define
class FakeFetcher:
    """Serves what tests put in ``modules``; ``gate``, if set, holds every call until it fires."""

    #: (module, version) -> (mod bytes, zip bytes)
    modules: dict[tuple[str, str], tuple[bytes, bytes]] = attrs.field(factory=dict)
    listings: dict[str, Listing] = attrs.field(factory=dict)
    failure: OriginError | None = None
    gate: Deferred[None] | None = None
    calls: list[tuple[str, ...]] = attrs.field(factory=list)
    cleaned: int = 0

    def add(self, module: str, version: str, zip_bytes: bytes, mod: bytes | None = None) -> None:
        self.modules[(module, version)] = (mod if mod is not None else f"module {module}\n".encode(), zip_bytes)

    async def _wait(self, *call: str) -> None:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate
        if self.failure is not None:
            raise self.failure

    def download(self, module: str, version: str, on_zip: Any = None) -> Deferred[Fetched]:
        return ensureDeferred(self._download(module, version))

    async def _download(self, module: str, version: str) -> Fetched:
        await self._wait("download", module, version)
        if (module, version) not in self.modules:
            raise OriginNotFound(f"{module}@{version}: invalid version: unknown revision {version}")
        mod, data = self.modules[(module, version)]
        fd, path = tempfile.mkstemp(prefix="fake-zip-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)

        async def cleanup() -> None:
            os.unlink(path)
            self.cleaned += 1

        info = json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()
        return Fetched(module, version, info, mod, path, cleanup)

    def query(self, module: str, query: str) -> Deferred[bytes]:
        async def resolve() -> bytes:
            await self._wait("query", module, query)
            if (module, query) in self.modules:  # a version it has resolves to itself, as with the go command
                return json.dumps({"Version": query, "Time": "2024-01-02T03:04:05Z"}).encode()
            listing = self.listings.get(module)
            if listing is None or listing.latest is None:
                raise OriginNotFound(f"{module}@{query}: no matching versions")
            return listing.latest

        return ensureDeferred(resolve())

    def listing(self, module: str) -> Deferred[Listing]:
        async def lookup() -> Listing:
            await self._wait("listing", module)
            if module not in self.listings:
                raise OriginNotFound(f"module {module}: repository not found")
            return self.listings[module]

        return ensureDeferred(lookup())

    def count(self, kind: str, *args: Any) -> int:
        return sum(1 for c in self.calls if c[0] == kind and c[1 : 1 + len(args)] == args)
