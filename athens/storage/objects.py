"""
Storage on an object store (S3, MinIO, Google Cloud Storage, Azure Blob) in
Athens' own layout, so a bucket Athens filled is served unchanged.

A version is three objects (:class:`Layout` says where).  The commit point is
the ``.info``: a save writes the zip (exclusively: the first complete zip
wins a race between nodes), then the go.mod, then the ``.info`` last; a
version is whole, and counted by ``exists``/``list``/``catalog``, only when
all three are there, and ``zip`` answers only once the ``.info`` is.  A
go.mod-only version is a ``.mod`` (and maybe ``.info``) with no zip; a
go.mod, which never changes once stored, is served as soon as it is there.
A save that fails or is cancelled deletes what it wrote (the bucket client
aborts its multipart upload); a zip a killed save left with no ``.info`` is
invisible, and removed by the next save of that version or by
:meth:`ObjectStorage.sweep` (``athens-admin gc``) once older than
:data:`STALE` (its go.mod, if written, stays: a go.mod-only version).

Besides Athens' objects: ``<version>.used`` beside a version (its last use,
written at most once an hour per node) and ``.athens-py/deletions`` (a token
rewritten at every delete, which every node polls).  Athens ignores both.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from typing import Any, AsyncIterable, AsyncIterator, Callable

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from athens.module import ModuleVersion, is_valid_semver
from athens.storage.bucket import IBucket, ObjectExists
from athens.storage.interface import (CatalogPage, IndexLine, IStorage, ISweep, ModChanged, NotFound, StorageError,
                                     index_of, sized)

log = Logger()

PARTS = ("info", "mod", "zip")
#: A zip (and go.mod) with no ``.info`` older than this is what a killed save left: removed.  Younger, it
#: may be a save in progress elsewhere (between its zip and its ``.info`` come only two small writes).
STALE = 600.0
#: ``touch`` writes a version's ``.used`` at most this often (seconds) per node.
TOUCH_EVERY = 3600.0
#: How many recent touches a node remembers.
TOUCHED = 100_000
DELETIONS_KEY = ".athens-py/deletions"
#: How long a save that lost the race for the zip waits for the winner's ``.info`` (seconds).
WINNER_WAIT = 30.0


@attrs.frozen
class Layout:
    """Where a version's objects live: Athens' S3/GCS/Azure layout or its MinIO one."""

    name: str
    #: ``(module, version, part) -> key`` for the parts ``info``, ``mod``, ``zip`` and ``used``.
    key: Callable[[str, str, str], str]
    #: ``key -> (module, version, part)`` or None for keys that are not a version's.
    parse: Callable[[str], tuple[str, str, str] | None]
    #: The listing prefix under which a module's versions are (it may hold other modules' too).
    module_prefix: Callable[[str], str]
    #: The listing prefix of one version's objects (it may hold other versions' too).
    version_prefix: Callable[[str, str], str]


_EXT = {"info": "info", "mod": "mod", "zip": "zip", "used": "used"}


def _at_v_parse(key: str) -> tuple[str, str, str] | None:
    module, sep, name = key.rpartition("/@v/")
    version, dot, ext = name.rpartition(".")
    if not sep or not module or not dot or ext not in _EXT or not is_valid_semver(version):
        return None
    return module, version, ext


#: ``<module>/@v/<version>.info|.mod|.zip``: what Athens' s3, gcp and azureblob storage write.
AT_V = Layout(
    "@v",
    key=lambda m, v, part: f"{m}/@v/{v}.{_EXT[part]}",
    parse=_at_v_parse,
    module_prefix=lambda m: f"{m}/@v/",
    version_prefix=lambda m, v: f"{m}/@v/{v}.",
)

_MINIO_NAMES = {"mod": "go.mod", "zip": "source.zip", "used": ".athens-py-used"}


def _minio_parse(key: str) -> tuple[str, str, str] | None:
    parts = key.split("/")
    if len(parts) < 3 or not is_valid_semver(parts[-2]):
        return None
    module, version, name = "/".join(parts[:-2]), parts[-2], parts[-1]
    if name == version + ".info":
        return module, version, "info"
    part = next((p for p, n in _MINIO_NAMES.items() if n == name), None)
    return (module, version, part) if part and module else None


#: ``<module>/<version>/go.mod|source.zip|<version>.info``: what Athens' minio storage writes.
MINIO = Layout(
    "minio",
    key=lambda m, v, part: f"{m}/{v}/{v}.info" if part == "info" else f"{m}/{v}/{_MINIO_NAMES[part]}",
    parse=_minio_parse,
    module_prefix=lambda m: f"{m}/",
    version_prefix=lambda m, v: f"{m}/{v}/",
)


def _whole(parts: dict[str, float]) -> bool:
    return all(p in parts for p in PARTS)


@implementer(IStorage, ISweep)
@attrs.define
class ObjectStorage:
    bucket: IBucket
    layout: Layout = AT_V
    reactor: IReactorTime | None = None
    #: Wall clock (epoch seconds): compared with the store's modification times.
    clock: Callable[[], float] = time.time
    _touched: OrderedDict[ModuleVersion, float] = attrs.field(factory=OrderedDict)

    @property
    def name(self) -> str:
        return str(self.bucket.name)

    def _key(self, module: str, version: str, part: str) -> str:
        return self.layout.key(module, version, part)

    async def _parts(self, module: str, version: str) -> dict[str, float]:
        """One listing: which of the version's objects exist, and when each was written."""
        prefix = self.layout.version_prefix(module, version)
        found: dict[str, float] = {}
        token = ""
        while True:
            listing = await self.bucket.list(prefix, token=token)
            for key in listing.keys:
                parsed = self.layout.parse(key)
                if parsed and parsed[:2] == (module, version):
                    found[parsed[2]] = listing.modified.get(key, 0.0)
            if not listing.next_token:
                return found
            token = listing.next_token

    # -- reading --

    def list(self, module: str) -> Deferred[list[str]]:
        async def versions() -> list[str]:
            seen: dict[str, set[str]] = {}
            token = ""
            while True:
                listing = await self.bucket.list(self.layout.module_prefix(module), token=token)
                for key in listing.keys:
                    parsed = self.layout.parse(key)
                    if parsed and parsed[0] == module:
                        seen.setdefault(parsed[1], set()).add(parsed[2])
                if not listing.next_token:
                    return [v for v, parts in seen.items() if parts.issuperset(PARTS)]
                token = listing.next_token

        return ensureDeferred(versions())

    def info(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._get(module, version, "info"))

    def go_mod(self, module: str, version: str) -> Deferred[bytes]:
        """Of a whole version or a go.mod-only one (a go.mod never changes once stored: it is served at once)."""
        return ensureDeferred(self._get(module, version, "mod"))

    async def _get(self, module: str, version: str, part: str) -> bytes:
        try:
            return await self.bucket.get(self._key(module, version, part))
        except NotFound:
            raise NotFound(f"{module}@{version}: not found") from None

    def zip(self, module: str, version: str) -> Deferred[object]:
        async def open_zip() -> object:
            try:
                blob, _ = await _both(self.bucket.open(self._key(module, version, "zip")),
                                      self.bucket.get(self._key(module, version, "info")))
            except NotFound:
                raise NotFound(f"{module}@{version}: not found") from None
            return blob

        return ensureDeferred(open_zip())

    def exists(self, module: str, version: str) -> Deferred[bool]:
        async def check() -> bool:
            return _whole(await self._parts(module, version))

        return ensureDeferred(check())

    def catalog(self, token: str, limit: int) -> Deferred[CatalogPage]:
        return ensureDeferred(self._catalog(token, max(limit, 1)))

    async def _catalog(self, token: str, limit: int) -> CatalogPage:
        """
        Bucket listings in key order from after the token's version (its
        last key); a version is counted when the listing has passed all three
        of its objects.  One version more than asked says whether there is more.
        """
        after = self._last_key(*token.rpartition("@")[::2]) if token else ""
        items: list[ModuleVersion] = []
        pending: dict[tuple[str, str], set[str]] = {}
        async for key, _ in self._keys_after(after):
            parsed = self.layout.parse(key)
            if parsed is None:
                continue
            parts = pending.setdefault(parsed[:2], set())
            parts.add(parsed[2])
            if parts.issuperset(PARTS):
                del pending[parsed[:2]]
                items.append(ModuleVersion(*parsed[:2]))
                if len(items) > limit:
                    break
        more = len(items) > limit
        items = items[:limit]
        return CatalogPage(items, str(items[-1]) if more else "")

    def index(self, since: float, limit: int) -> Deferred[list[IndexLine]]:
        return ensureDeferred(self._index(since, limit))

    async def _index(self, since: float, limit: int) -> list[IndexLine]:
        """A whole version's save is when its ``.info`` (the commit point) was written: one pass over the bucket."""
        saved: dict[tuple[str, str], float] = {}
        parts: dict[tuple[str, str], set[str]] = {}
        async for key, modified in self._keys_after(""):
            parsed = self.layout.parse(key)
            if parsed is None or parsed[2] not in PARTS:
                continue
            parts.setdefault(parsed[:2], set()).add(parsed[2])
            if parsed[2] == "info":
                saved[parsed[:2]] = modified
        lines = (IndexLine(m, v, saved[m, v]) for (m, v), p in parts.items() if p.issuperset(PARTS))
        return index_of(lines, since, limit)

    def _last_key(self, module: str, version: str) -> str:
        return max(self._key(module, version, p) for p in (*PARTS, "used"))

    async def _keys_after(self, after: str) -> AsyncIterator[tuple[str, float]]:
        """Every key of the bucket after ``after``, page by page, with when it was written."""
        token = after
        while True:
            listing = await self.bucket.list("", token=token)
            for key in listing.keys:
                yield key, listing.modified.get(key, 0.0)
            if not listing.next_token:
                return
            token = listing.next_token

    # -- writing --

    def save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        return ensureDeferred(self._save(module, version, info, mod, zip))

    async def _save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> bool:
        parts = await self._parts(module, version)
        if _whole(parts):
            return False
        if "zip" in parts and "info" not in parts and self.clock() - parts["zip"] > STALE:
            await self._remove(module, version, ["zip"])
            log.info("removed the zip a killed save of {what} left", what=f"{module}@{version}")
            del parts["zip"]
        if "mod" in parts and await self._get(module, version, "mod") != mod:
            raise ModChanged(module, version)
        wrote: list[str] = []
        try:
            try:
                await self.bucket.upload(self._key(module, version, "zip"), sized(zip), exclusive=True)
            except ObjectExists:
                return await self._lost_race(module, version)
            wrote.append("zip")
            if "mod" not in parts:
                await self.bucket.put(self._key(module, version, "mod"), mod)
                wrote.append("mod")
            if "info" not in parts:
                try:
                    await self.bucket.put(self._key(module, version, "info"), info, exclusive=True)
                except ObjectExists:
                    pass  # a go.mod-only save of the version wrote it meanwhile: whole all the same
        except BaseException:
            await self._remove(module, version, wrote)
            raise
        return True

    def save_mod(self, module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        """A go.mod-only version is its ``.mod`` (and ``.info``) with no zip: what Athens' layout allows."""

        async def store() -> bool:
            parts = await self._parts(module, version)
            added = False
            try:
                if "mod" not in parts:
                    await self.bucket.put(self._key(module, version, "mod"), mod, exclusive=True)
                    added = True
                if info is not None and "info" not in parts and "zip" not in parts:
                    await self.bucket.put(self._key(module, version, "info"), info, exclusive=True)
                    added = True
            except ObjectExists:
                pass  # another node stored it first: what is stored is kept
            return added

        return ensureDeferred(store())

    async def _lost_race(self, module: str, version: str) -> bool:
        """Another save's zip is there: False once its ``.info`` is (the version whole), else an error."""
        from twisted.internet import reactor as default

        reactor = self.reactor or default
        delay, waited = 0.05, 0.0
        while True:
            if _whole(await self._parts(module, version)):
                return False
            if waited >= WINNER_WAIT:
                raise StorageError(f"{module}@{version}: another save holds its zip and has not finished (a save in "
                                   f"progress, or what a killed one left: removed after {STALE:g}s)")
            await deferLater(reactor, delay, lambda: None)
            waited += delay
            delay = min(delay * 2, 2.0)

    async def _remove(self, module: str, version: str, parts: list[str]) -> None:
        """Best effort: what is left is invisible, and removed by a later save or a sweep."""
        for part in parts:
            try:
                await self.bucket.delete(self._key(module, version, part))
            except StorageError as e:
                log.warn("could not remove {key}: {error}", key=self._key(module, version, part), error=str(e))

    def delete(self, module: str, version: str) -> Deferred[None]:
        async def remove() -> None:
            parts = await self._parts(module, version)
            if not _whole(parts) and "mod" not in parts:  # (whole, or go.mod-only)
                raise NotFound(f"{module}@{version}: not found")
            # The .info first: from then on no reader sees the version.
            for part in ("info", "mod", "zip", "used"):
                if part in parts:
                    await self.bucket.delete(self._key(module, version, part))
            self._touched.pop(ModuleVersion(module, version), None)
            await self.bucket.put(DELETIONS_KEY, secrets.token_hex(8).encode())

        return ensureDeferred(remove())

    def deletions(self) -> Deferred[str]:
        async def read() -> str:
            try:
                return (await self.bucket.get(DELETIONS_KEY)).decode("ascii", "replace")
            except NotFound:
                return ""

        return ensureDeferred(read())

    def touch(self, module: str, version: str) -> Deferred[None]:
        key = ModuleVersion(module, version)
        now = self.clock()
        if now - self._touched.get(key, float("-inf")) < TOUCH_EVERY:
            return succeed(None)

        async def used() -> None:
            if not _whole(await self._parts(module, version)):
                return
            await self.bucket.put(self._key(module, version, "used"), b"")
            self._touched[key] = now
            self._touched.move_to_end(key)
            while len(self._touched) > TOUCHED:
                self._touched.popitem(last=False)

        return ensureDeferred(used())

    def last_used(self, module: str, version: str) -> Deferred[float]:
        async def when() -> float:
            parts = await self._parts(module, version)
            if not _whole(parts):
                raise NotFound(f"{module}@{version}: not found")
            return max(parts["info"], parts.get("used", 0.0))

        return ensureDeferred(when())

    def ping(self) -> Deferred[None]:
        return self.bucket.ping()

    def close(self) -> Deferred[None]:
        return self.bucket.close()

    # -- maintenance --

    def sweep(self, older_than: float | None = None) -> Deferred[list[str]]:
        """
        Remove the zips killed saves left (no ``.info`` beside them) older than
        ``older_than``; the keys.  A go.mod such a save wrote stays: a go.mod-only
        version, as good as one the proxy stores on purpose.
        """

        limit = STALE if older_than is None else older_than

        async def clean() -> list[str]:
            removed: list[str] = []
            current: tuple[str, str] | None = None
            parts: dict[str, float] = {}

            async def settle() -> None:
                if current is None or "info" in parts or self.clock() - parts.get("zip", self.clock()) <= limit:
                    return
                exact = await self._parts(*current)  # (keys of two versions can interleave in key order)
                if "info" in exact or self.clock() - exact.get("zip", self.clock()) <= limit:
                    return
                await self._remove(*current, ["zip"])
                removed.append(self._key(*current, "zip"))

            async for key, modified in self._keys_after(""):
                parsed = self.layout.parse(key)
                if parsed is None:
                    continue
                if parsed[:2] != current:
                    await settle()
                    current, parts = parsed[:2], {}
                parts[parsed[2]] = modified
            await settle()
            return removed

        return ensureDeferred(clean())


async def _both(first: Deferred[Any], second: Deferred[Any]) -> tuple[Any, Any]:
    """Two requests at once; the first failure raised as itself (what the other opened is closed)."""
    results = await DeferredList([first, second], consumeErrors=True)
    failures = [r for ok, r in results if not ok]
    if failures:
        for ok, r in results:
            if ok and hasattr(r, "close"):
                r.close()
        failures[0].raiseException()
    return results[0][1], results[1][1]
