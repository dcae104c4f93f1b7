"""An object store in memory: the IBucket fake shipped for tests of ObjectStorage."""

from __future__ import annotations

import bisect
import time
from typing import AsyncIterable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from zope.interface import implementer

from athens.storage.bucket import IBucket, Listing, ObjectExists
from athens.storage.interface import NotFound
from athens.storage.memory import BytesBlob


@implementer(IBucket)
@attrs.define
class MemoryBucket:
    name = "memory-bucket"
    objects: dict[str, bytes] = attrs.field(factory=dict)
    modified: dict[str, float] = attrs.field(factory=dict)

    def get(self, key: str) -> Deferred[bytes]:
        if key not in self.objects:
            return fail(NotFound(f"{key}: no such object"))
        return succeed(self.objects[key])

    def open(self, key: str) -> Deferred[BytesBlob]:
        return self.get(key).addCallback(BytesBlob)

    def _write(self, key: str, data: bytes, exclusive: bool) -> None:
        if exclusive and key in self.objects:
            raise ObjectExists(f"{key}: already there")
        self.objects[key] = bytes(data)
        self.modified[key] = time.time()

    def put(self, key: str, data: bytes, exclusive: bool = False) -> Deferred[None]:
        try:
            self._write(key, data, exclusive)
        except ObjectExists as e:
            return fail(e)
        return succeed(None)

    def upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool = False) -> Deferred[int]:
        async def collect() -> int:
            data = b"".join([c async for c in chunks])
            self._write(key, data, exclusive)  # whole, at the end: a failed stream leaves nothing
            return len(data)

        return ensureDeferred(collect())

    def exists(self, key: str) -> Deferred[bool]:
        return succeed(key in self.objects)

    def delete(self, key: str) -> Deferred[None]:
        self.objects.pop(key, None)
        self.modified.pop(key, None)
        return succeed(None)

    def list(self, prefix: str, delimiter: str = "", token: str = "", limit: int = 1000) -> Deferred[Listing]:
        ordered = sorted(k for k in self.objects if k.startswith(prefix))
        start = bisect.bisect_right(ordered, token) if token else 0
        keys: list[str] = []
        prefixes: list[str] = []
        last = ""
        for key in ordered[start:]:
            if len(keys) + len(prefixes) == limit:
                return succeed(Listing(keys, prefixes, last, {k: self.modified[k] for k in keys}))
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                if prefixes and prefixes[-1] == common:
                    continue
                prefixes.append(common)
                last = common + "\U0010ffff"  # continue after everything under this prefix
            else:
                keys.append(key)
                last = key
        return succeed(Listing(keys, prefixes, "", {k: self.modified[k] for k in keys}))

    def ping(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)
