"""
A GOPROXY list of origins, with the go command's own semantics.

``https://a,https://b|direct``: after ``,`` the next entry is tried only
when the previous one said not found (404/410); after ``|`` on any error.
``direct`` is the VCS through the go command; ``off`` stops the list.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from athens.fetch.interface import Fetched, IFetcher, Listing, NoSmallFetch, OnZip, OriginError, OriginNotFound

T = TypeVar("T")


class GoproxyError(ValueError):
    pass


@attrs.frozen
class Entry:
    fetcher: IFetcher | None  # None: "off"
    #: Try the next entry on any error (``|``), not only on not found (``,``).
    any_error: bool = False
    name: str = ""


def parse_goproxy(value: str, upstream: Callable[[str], IFetcher], direct: Callable[[], IFetcher]) -> list[Entry]:
    """Entries of a GOPROXY value; ``upstream(url)`` and ``direct()`` make the fetchers."""
    entries: list[Entry] = []
    text = value.strip()
    while text:
        cut = min((i for i in (text.find(","), text.find("|")) if i >= 0), default=len(text))
        item, separator, text = text[:cut].strip(), text[cut : cut + 1], text[cut + 1 :].strip()
        if not item:
            continue
        if item == "direct":
            fetcher: IFetcher | None = direct()
        elif item == "off":
            fetcher = None
        elif item.startswith(("http://", "https://")):
            fetcher = upstream(item)
        else:
            raise GoproxyError(f"GOPROXY entry {item!r} is not a URL, direct or off")
        entries.append(Entry(fetcher, separator == "|", item))
    if not entries:
        raise GoproxyError("GOPROXY is empty")
    return entries


@implementer(IFetcher)
@attrs.define
class ChainFetcher:
    entries: Sequence[Entry]

    async def _first(self, call: Callable[[IFetcher], Deferred[T]]) -> T:
        error: OriginError = OriginNotFound("no origin in GOPROXY has it")
        for entry in self.entries:
            if entry.fetcher is None:
                raise OriginNotFound(f"module lookup disabled by GOPROXY=off (after: {error})")
            try:
                return await call(entry.fetcher)
            except OriginNotFound as e:
                error = e
            except OriginError as e:
                if not entry.any_error:
                    raise
                error = e
        raise error

    def download(self, module: str, version: str, on_zip: OnZip | None = None) -> Deferred[Fetched]:
        return ensureDeferred(self._first(lambda f: f.download(module, version, on_zip)))

    def query(self, module: str, query: str) -> Deferred[bytes]:
        return ensureDeferred(self._first(lambda f: f.query(module, query)))

    def listing(self, module: str) -> Deferred[Listing]:
        return ensureDeferred(self._first(lambda f: f.listing(module)))

    def small(self, module: str, version: str, kind: str) -> Deferred[bytes]:
        return ensureDeferred(self._first(lambda f: small_of(f, module, version, kind)))


def small_of(fetcher: IFetcher, module: str, version: str, kind: str) -> Deferred[bytes]:
    """A fetcher's ``small``, where it has one (upstreams); NoSmallFetch otherwise (the go command)."""
    small = getattr(fetcher, "small", None)
    if small is None:
        raise NoSmallFetch(kind)
    return small(module, version, kind)  # type: ignore[no-any-return]


def goproxy_of(env_vars: Sequence[str]) -> str:
    """The GOPROXY in ``GoBinaryEnvVars`` (Athens' way to name upstreams); ``direct`` if none."""
    value = "direct"
    for assignment in env_vars:
        key, _, item = assignment.partition("=")
        if key.strip() == "GOPROXY":
            value = item
    return value



@implementer(IFetcher)
@attrs.define
class PerModuleFetcher:
    """A download-file block with its own ``downloadURL`` in a filling mode fills from that upstream."""

    default: IFetcher
    url_for: Callable[[str], str]
    upstream: Callable[[str], IFetcher]
    _made: dict[str, IFetcher] = attrs.field(factory=dict)

    def _for(self, module: str) -> IFetcher:
        url = self.url_for(module)
        if not url:
            return self.default
        if url not in self._made:
            self._made[url] = self.upstream(url)
        return self._made[url]

    def download(self, module: str, version: str, on_zip: OnZip | None = None) -> Deferred[Fetched]:
        return self._for(module).download(module, version, on_zip)

    def query(self, module: str, query: str) -> Deferred[bytes]:
        return self._for(module).query(module, query)

    def listing(self, module: str) -> Deferred[Listing]:
        return self._for(module).listing(module)

    def small(self, module: str, version: str, kind: str) -> Deferred[bytes]:
        return small_of(self._for(module), module, version, kind)
