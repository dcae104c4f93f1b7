"""
The copy of the vulnerability database in stores that several nodes share.

- Redis: one hash, ``<prefix>vulndb``, with the fields ``state`` and
  ``archive``, written by one ``HSET`` and read by one ``HMGET``.
- PostgreSQL: one row of ``athens_vulndb``, written by one upsert.
- An object store (any ``IBucket``): ``.athens-py/vulndb/<digest>.zip``, then
  ``.athens-py/vulndb/state.json`` naming it (an object is written whole); the
  previous archive is kept for readers that read the state just before.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from athens.storage.interface import NotFound, StorageError
from athens.storage.redis import _cmd, _eval
from athens.vulndb.store import IVulnStore, State


@implementer(IVulnStore)
@attrs.define
class RedisVulnStore:
    """One Redis hash: state and archive, written and read in one command each."""

    redis: Any
    prefix: str = "athens:"

    @property
    def key(self) -> bytes:
        return (self.prefix + "vulndb").encode()

    def state(self) -> Deferred[State | None]:
        async def get() -> State | None:
            raw = await _cmd(self.redis, "HGET", self.key, b"state")
            return None if raw is None else State.loads(raw)

        return ensureDeferred(get())

    def load(self) -> Deferred[tuple[State, bytes] | None]:
        async def get() -> tuple[State, bytes] | None:
            raw, archive = await _cmd(self.redis, "HMGET", self.key, b"state", b"archive")
            if raw is None or archive is None:
                return None
            return State.loads(raw), bytes(archive)

        return ensureDeferred(get())

    def save(self, state: State, archive: bytes) -> Deferred[None]:
        async def put() -> None:
            await _cmd(self.redis, "HSET", self.key, b"state", state.dumps(), b"archive", archive)

        return ensureDeferred(put())

    def confirm(self, digest: str, checked: float) -> Deferred[None]:
        async def update() -> None:
            state = await self.state()
            if state is None or state.digest != digest:
                return
            new = attrs.evolve(state, checked=checked).dumps()
            await _eval(self.redis, _CONFIRM, [self.key], [state.dumps(), new])

        return ensureDeferred(update())


#: Replace the state only if it is still the one read (a save in between wins).
_CONFIRM = b"""
if redis.call('HGET', KEYS[1], 'state') == ARGV[1] then redis.call('HSET', KEYS[1], 'state', ARGV[2]) end
return 0
"""

_TABLE = """CREATE TABLE IF NOT EXISTS athens_vulndb (
    name text PRIMARY KEY,
    state bytea NOT NULL,
    archive bytea NOT NULL)"""


@implementer(IVulnStore)
@attrs.define
class PostgresVulnStore:
    """One row in the PostgreSQL storage's database; the table is made at first use."""

    storage: Any
    _ready: bool = False

    async def _run(self, fn: Any, *args: Any) -> Any:
        if not self._ready:
            await self.storage._interaction(_create)
            self._ready = True
        return await self.storage._interaction(fn, *args)

    def state(self) -> Deferred[State | None]:
        async def get() -> State | None:
            row = await self._run(_select, "state")
            return None if row is None else State.loads(bytes(row[0]))

        return ensureDeferred(get())

    def load(self) -> Deferred[tuple[State, bytes] | None]:
        async def get() -> tuple[State, bytes] | None:
            row = await self._run(_select, "state, archive")
            return None if row is None else (State.loads(bytes(row[0])), bytes(row[1]))

        return ensureDeferred(get())

    def save(self, state: State, archive: bytes) -> Deferred[None]:
        return ensureDeferred(self._run(_upsert, state.dumps(), archive))

    def confirm(self, digest: str, checked: float) -> Deferred[None]:
        async def update() -> None:
            state = await self.state()
            if state is not None and state.digest == digest:
                await self._run(_replace_state, state.dumps(), attrs.evolve(state, checked=checked).dumps())

        return ensureDeferred(update())


def _create(cursor: Any) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(7261542)")  # nodes starting together do not race
    cursor.execute(_TABLE)


def _select(cursor: Any, columns: str) -> Any:
    cursor.execute(f"SELECT {columns} FROM athens_vulndb WHERE name = 'vulndb'")
    return cursor.fetchone()


def _upsert(cursor: Any, state: bytes, archive: bytes) -> None:
    cursor.execute("INSERT INTO athens_vulndb (name, state, archive) VALUES ('vulndb', %s, %s) "
                   "ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, archive = EXCLUDED.archive",
                   (state, archive))


def _replace_state(cursor: Any, old: bytes, new: bytes) -> None:
    cursor.execute("UPDATE athens_vulndb SET state = %s WHERE name = 'vulndb' AND state = %s", (new, old))


BUCKET_PREFIX = ".athens-py/vulndb/"


@implementer(IVulnStore)
@attrs.define
class BucketVulnStore:
    """Objects in a bucket: the archive under its digest, then the state naming it."""

    bucket: Any

    def state(self) -> Deferred[State | None]:
        async def get() -> State | None:
            try:
                return State.loads(await self.bucket.get(BUCKET_PREFIX + "state.json"))
            except NotFound:
                return None

        return ensureDeferred(get())

    def load(self) -> Deferred[tuple[State, bytes] | None]:
        async def get() -> tuple[State, bytes] | None:
            for _ in range(3):  # a save may replace the state between the two reads: read it again
                state = await self.state()
                if state is None:
                    return None
                try:
                    return state, await self.bucket.get(f"{BUCKET_PREFIX}{state.digest}.zip")
                except NotFound:
                    continue
            raise StorageError("the vulnerability database changed three times while it was read")

        return ensureDeferred(get())

    def save(self, state: State, archive: bytes) -> Deferred[None]:
        async def put() -> None:
            previous = await self.state()
            await self.bucket.put(f"{BUCKET_PREFIX}{state.digest}.zip", archive)
            await self.bucket.put(BUCKET_PREFIX + "state.json", state.dumps())
            keep = {f"{BUCKET_PREFIX}{state.digest}.zip"} | (
                {f"{BUCKET_PREFIX}{previous.digest}.zip"} if previous else set())
            listing = await self.bucket.list(BUCKET_PREFIX)
            for key in listing.keys:
                if key.endswith(".zip") and key not in keep:
                    await self.bucket.delete(key)

        return ensureDeferred(put())

    def confirm(self, digest: str, checked: float) -> Deferred[None]:
        # Without a conditional write, a save on another node between the read and the write can be undone
        # here; its archive is kept (the previous one), and the next refresh copies the newer database again.
        async def update() -> None:
            state = await self.state()
            if state is not None and state.digest == digest:
                await self.bucket.put(BUCKET_PREFIX + "state.json", attrs.evolve(state, checked=checked).dumps())

        return ensureDeferred(update())
