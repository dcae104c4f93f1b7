"""In-process storage for development and tests: fast, shared by nothing, lost at exit."""

from __future__ import annotations

import time
from typing import AsyncIterable, AsyncIterator

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from zope.interface import implementer

from athens.module import ModuleVersion
from athens.storage.interface import CatalogPage, IndexLine, IStorage, ModChanged, NotFound, index_of, page, sized
from athens.storage.summary import IStorageSummary, Summary

CHUNK = 256 << 10


@attrs.frozen
class _Version:
    info: bytes | None
    mod: bytes
    #: None: a go.mod-only version.
    zip: bytes | None


@attrs.define
class BytesBlob:
    """A Blob over bytes in memory."""

    data: bytes
    chunk_size: int = CHUNK

    @property
    def size(self) -> int:
        return len(self.data)

    async def chunks(self) -> AsyncIterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), self.chunk_size):
            yield bytes(view[start : start + self.chunk_size])

    def close(self) -> None:
        pass


@implementer(IStorage, IStorageSummary)
@attrs.define
class MemoryStorage:
    name = "memory"
    _versions: dict[ModuleVersion, _Version] = attrs.field(factory=dict)
    _used: dict[ModuleVersion, float] = attrs.field(factory=dict)
    #: When each whole version was saved (completed, for a go.mod-only one).
    _saved: dict[ModuleVersion, float] = attrs.field(factory=dict)
    _deleted: int = 0

    def _get(self, module: str, version: str, part: str = "mod", whole: bool = False) -> bytes:
        stored = self._versions.get(ModuleVersion(module, version))
        value = None if stored is None or (whole and stored.zip is None) else getattr(stored, part)
        if value is None:
            raise NotFound(f"{module}@{version}: not found")
        return value  # type: ignore[no-any-return]

    def _whole(self) -> list[ModuleVersion]:
        return [key for key, stored in self._versions.items() if stored.zip is not None]

    def list(self, module: str) -> Deferred[list[str]]:
        return succeed([mv.version for mv in self._whole() if mv.path == module])

    def info(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._async(lambda: self._get(module, version, "info")))

    def go_mod(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._async(lambda: self._get(module, version, "mod")))

    def zip(self, module: str, version: str) -> Deferred[BytesBlob]:
        return ensureDeferred(self._async(lambda: BytesBlob(self._get(module, version, "zip"))))

    def exists(self, module: str, version: str) -> Deferred[bool]:
        stored = self._versions.get(ModuleVersion(module, version))
        return succeed(stored is not None and stored.zip is not None)

    def save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        return ensureDeferred(self._save(ModuleVersion(module, version), info, mod, zip))

    async def _save(self, key: ModuleVersion, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> bool:
        data = b"".join([chunk async for chunk in sized(zip)])
        stored = self._versions.get(key)
        if stored is not None:
            if stored.zip is not None:
                return False
            if stored.mod != mod:
                raise ModChanged(key.path, key.version)
            info = stored.info or info
        self._versions[key] = _Version(bytes(info), bytes(mod), data)
        self._used[key] = self._saved[key] = time.time()
        return True

    def save_mod(self, module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        key = ModuleVersion(module, version)
        stored = self._versions.get(key)
        if stored is None:
            self._versions[key] = _Version(None if info is None else bytes(info), bytes(mod), None)
            return succeed(True)
        if stored.info is None and info is not None and stored.zip is None:
            self._versions[key] = attrs.evolve(stored, info=bytes(info))
            return succeed(True)
        return succeed(False)

    def delete(self, module: str, version: str) -> Deferred[None]:
        def remove() -> None:
            self._get(module, version)
            del self._versions[ModuleVersion(module, version)]
            self._used.pop(ModuleVersion(module, version), None)
            self._saved.pop(ModuleVersion(module, version), None)
            self._deleted += 1

        return ensureDeferred(self._async(remove))

    def catalog(self, token: str, limit: int) -> Deferred[CatalogPage]:
        return succeed(page(self._whole(), token, limit))

    def index(self, since: float, limit: int) -> Deferred[list[IndexLine]]:
        lines = (IndexLine(key.path, key.version, saved) for key, saved in self._saved.items())
        return succeed(index_of(lines, since, limit))

    def deletions(self) -> Deferred[str]:
        return succeed(str(self._deleted))

    def summary(self) -> Deferred[Summary]:
        whole = self._whole()
        size = sum(len(v.info or b"") + len(v.mod) + len(v.zip or b"") for v in self._versions.values())
        return succeed(Summary(len({mv.path for mv in whole}), len(whole), size, "bytes held in memory"))

    def touch(self, module: str, version: str) -> Deferred[None]:
        key = ModuleVersion(module, version)
        if key in self._used:
            self._used[key] = time.time()
        return succeed(None)

    def last_used(self, module: str, version: str) -> Deferred[float]:
        def when() -> float:
            self._get(module, version, whole=True)  # NotFound if absent
            return self._used[ModuleVersion(module, version)]

        return ensureDeferred(self._async(when))

    def ping(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    @staticmethod
    async def _async(fn):  # type: ignore[no-untyped-def]
        return fn()
