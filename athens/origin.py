"""
Everything a cache miss may use: the download policy, the filter, the stash,
the list cache and the fetcher for queries.  The protocol handlers hold one
``Origin`` or none (a pure cache).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from athens.fetch.interface import IFetcher, OriginError
from athens.filter import Filter
from athens.listcache import ListCache
from athens.module import InvalidInput, check_version
from athens.policy import DownloadPolicy
from athens.singleflight import SingleFlight
from athens.stash import Stash

NETWORK_MODES = ("strict", "offline", "fallback")


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
