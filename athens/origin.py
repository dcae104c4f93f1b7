"""
Everything a cache miss may use: the download policy, the filter, the stash,
the list cache and the fetcher for queries.  The protocol handlers hold one
``Origin`` or none (a pure cache).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from athens.fetch.chain import small_of
from athens.fetch.interface import IFetcher, OriginError
from athens.filter import Filter
from athens.listcache import ListCache
from athens.module import InvalidInput, check_version
from athens.policy import DownloadPolicy
from athens.singleflight import SingleFlight
from athens.stash import Stash

NETWORK_MODES = ("strict", "offline", "fallback")

log = Logger()


@attrs.define
class Origin:
    fetcher: IFetcher
    stash: Stash
    lists: ListCache
    policy: DownloadPolicy = attrs.field(factory=DownloadPolicy)
    filter: Filter | None = None
    network_mode: str = "strict"
    global_endpoint: str = ""
    #: treq's connection pool to upstreams, closed at shutdown.
    http_pool: Any = None
    _queries: SingleFlight[bytes] = attrs.field(factory=SingleFlight)
    _smalls: SingleFlight[bytes] = attrs.field(factory=SingleFlight)

    @property
    def offline(self) -> bool:
        return self.network_mode == "offline"

    async def query(self, module: str, query: str) -> bytes:
        """Resolve a branch, commit or partial version; concurrent equal queries share one run."""
        info = await self._queries.do((module, query), lambda: self.fetcher.query(module, query))
        try:
            version = json.loads(info)["Version"]
            check_version(module, version)
        except (ValueError, KeyError, TypeError, InvalidInput):
            raise OriginError(f"the origin resolved {module}@{query} to something that is not a version") from None
        return info

    async def small(self, module: str, version: str, kind: str) -> bytes:
        """
        A missing version's ``.info`` or ``.mod`` alone, from an upstream, checked
        (go.mod against the checksum database): the go command needs only go.mod
        for much of a module graph, and its zip is fetched when it is asked for.
        Raises NoSmallFetch where the origin hands out whole versions only.
        """
        return await self._smalls.do((module, version, kind), lambda: ensureDeferred(self._small_kept(module, version,
                                                                                                   kind)))

    async def _small_kept(self, module: str, version: str, kind: str) -> bytes:
        data = await self._small(module, version, kind)
        if kind == "mod":
            self._keep_mod(module, version, data)
        return data

    async def _small(self, module: str, version: str, kind: str) -> bytes:
        data = await small_of(self.fetcher, module, version, kind)
        if kind == "mod":
            if self.stash.verifier is not None:
                await self.stash.verifier.verify_mod(module, version, data)
            if self.stash.own is not None:
                await self.stash.own.check_mod(module, version, data)
        return data

    async def store_mod(self, module: str, version: str) -> tuple[bytes, bool]:
        """
        Store a version go.mod-only (with its ``.info``), from an upstream,
        checked: what ``athens-admin prefetch`` does for go.sum's ``/go.mod``
        lines.  The go.mod, and whether anything was added.  Raises
        NoSmallFetch where the origin hands out whole versions only.
        """
        mod = await self._small(module, version, "mod")
        info = await self._small(module, version, "info")
        return mod, await self.stash.storage.save_mod(module, version, mod, info)

    def _keep_mod(self, module: str, version: str, mod: bytes) -> None:
        """Store it go.mod-only, off the answer's path: every worker and node, and a restart, then have it."""
        d = self.stash.storage.save_mod(module, version, mod, None)
        d.addErrback(lambda f: log.warn("could not keep the go.mod of {what}: {error}", what=f"{module}@{version}",
                                        error=f.getErrorMessage()))
