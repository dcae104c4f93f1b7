"""
PostgreSQL storage: the relational store for several proxy nodes.

``athens_versions`` holds one row a version (``.info``, ``go.mod``, size);
``athens_chunks`` holds its zip in 1 MiB rows, read one at a time so a zip
streams; ``athens_gomods`` holds go.mod-only versions until a save completes
them (in the save's transaction).  A save is one transaction: the chunks are written as the stream
arrives (the interaction pulls each chunk from the reactor), then the
version row; a failure rolls all of it back, and a concurrent save of the
same version waits on the primary key and finds it stored.  The schema is
created and migrated at first use; all database work runs in adbapi's
bounded pool of threads, closed at shutdown.
"""

from __future__ import annotations

import secrets
from typing import Any, AsyncIterable, AsyncIterator

import attrs
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from zope.interface import implementer

from athens.module import ModuleVersion
from athens.storage.interface import (CatalogPage, IndexLine, IStorage, ModChanged, NotFound, StorageError,
                                     StorageUnavailable, rechunk, sized)
from athens.storage.summary import IStorageSummary, Summary

CHUNK = 1 << 20
SCHEMA_VERSION = 5

_MIGRATIONS = {
    1: [
        """CREATE TABLE IF NOT EXISTS athens_versions (
               module text COLLATE "C" NOT NULL,
               version text COLLATE "C" NOT NULL,
               info bytea NOT NULL,
               mod bytea NOT NULL,
               size bigint NOT NULL,
               blob text NOT NULL,
               chunks integer NOT NULL,
               created timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (module, version))""",
        """CREATE TABLE IF NOT EXISTS athens_chunks (
               blob text NOT NULL,
               n integer NOT NULL,
               data bytea NOT NULL,
               PRIMARY KEY (blob, n))""",
    ],
    2: ["ALTER TABLE athens_versions ADD COLUMN IF NOT EXISTS used timestamptz"],
    # Advanced at every delete; caches in front of the store poll it.
    3: ["CREATE SEQUENCE IF NOT EXISTS athens_deletions"],
    4: [
        """CREATE TABLE IF NOT EXISTS athens_gomods (
               module text COLLATE "C" NOT NULL,
               version text COLLATE "C" NOT NULL,
               info bytea,
               mod bytea NOT NULL,
               PRIMARY KEY (module, version))""",
    ],
    # /index: versions by save time.
    5: ["CREATE INDEX IF NOT EXISTS athens_versions_created ON athens_versions (created, module, version)"],
}


def _unavailable(e: Exception) -> Exception:
    import psycopg

    if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StorageUnavailable(f"postgres: {str(e).strip() or type(e).__name__}")
    if isinstance(e, psycopg.Error):
        return StorageError(f"postgres: {str(e).strip()}")
    return e


@attrs.define
class SQLBlob:
    storage: "PostgresStorage"
    blob: str
    count: int
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        for n in range(self.count):
            rows = await self.storage._query("SELECT data FROM athens_chunks WHERE blob = %s AND n = %s", (self.blob, n))
            if not rows:
                raise StorageError("a zip chunk disappeared while it was read (the version was deleted)")
            yield bytes(rows[0][0])

    def close(self) -> None:
        pass


@implementer(IStorage, IStorageSummary)
@attrs.define
class PostgresStorage:
    pool: adbapi.ConnectionPool
    reactor: Any
    name = "postgres"
    _migrated: bool = False

    @classmethod
    def connect(cls, conninfo: str, reactor: Any, max_connections: int = 8) -> "PostgresStorage":
        pool = adbapi.ConnectionPool(
            "psycopg", conninfo=conninfo, cp_min=1, cp_max=max_connections, cp_reconnect=True,
            cp_noisy=False, cp_openfun=None, connect_timeout=10,
        )
        return cls(pool, reactor)

    async def _ensure_schema(self) -> None:
        if self._migrated:
            return
        try:
            await self.pool.runInteraction(_migrate)
        except Exception as e:
            raise _unavailable(e) from None
        self._migrated = True

    async def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        await self._ensure_schema()
        try:
            return await self.pool.runQuery(sql, args)  # type: ignore[no-any-return]
        except Exception as e:
            raise _unavailable(e) from None

    async def _interaction(self, fn: Any, *args: Any) -> Any:
        await self._ensure_schema()
        try:
            return await self.pool.runInteraction(fn, *args)
        except Exception as e:
            raise _unavailable(e) from None

    def list(self, module: str) -> Deferred[list[str]]:
        async def versions() -> list[str]:
            return [r[0] for r in await self._query("SELECT version FROM athens_versions WHERE module = %s", (module,))]

        return ensureDeferred(versions())

    def info(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._small("info", module, version))

    def go_mod(self, module: str, version: str) -> Deferred[bytes]:
        return ensureDeferred(self._small("mod", module, version))

    async def _small(self, column: str, module: str, version: str) -> bytes:
        """Of the whole version, or else of the go.mod-only one: one query."""
        rows = await self._query(
            f"SELECT {column}, 0 AS whole FROM athens_versions WHERE module = %s AND version = %s UNION ALL "
            f"SELECT {column}, 1 FROM athens_gomods WHERE module = %s AND version = %s AND {column} IS NOT NULL "
            "ORDER BY whole LIMIT 1",
            (module, version, module, version))
        if not rows:
            raise NotFound(f"{module}@{version}: not found")
        return bytes(rows[0][0])

    def zip(self, module: str, version: str) -> Deferred[SQLBlob]:
        async def open_zip() -> SQLBlob:
            rows = await self._query(
                "SELECT blob, chunks, size FROM athens_versions WHERE module = %s AND version = %s", (module, version))
            if not rows:
                raise NotFound(f"{module}@{version}: not found")
            blob, count, size = rows[0]
            return SQLBlob(self, blob, count, size)

        return ensureDeferred(open_zip())

    def exists(self, module: str, version: str) -> Deferred[bool]:
        async def check() -> bool:
            return bool(await self._query("SELECT 1 FROM athens_versions WHERE module = %s AND version = %s",
                                          (module, version)))

        return ensureDeferred(check())

    def save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        return ensureDeferred(self._save(module, version, info, mod, zip))

    async def _save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> bool:
        if await self.exists(module, version):
            return False
        chunks = rechunk(sized(zip), CHUNK).__aiter__()

        def next_chunk() -> bytes | None:
            """In the interaction's thread: wait on the reactor for the next chunk of the stream."""
            async def pull() -> bytes | None:
                try:
                    return await chunks.__anext__()
                except StopAsyncIteration:
                    return None

            return blockingCallFromThread(self.reactor, lambda: ensureDeferred(pull()))  # type: ignore[no-any-return]

        def transaction(cursor: Any) -> bool:
            blob = secrets.token_hex(12)
            count = size = 0
            while (chunk := next_chunk()) is not None:
                cursor.execute("INSERT INTO athens_chunks (blob, n, data) VALUES (%s, %s, %s)", (blob, count, chunk))
                count += 1
                size += len(chunk)
            cursor.execute("DELETE FROM athens_gomods WHERE module = %s AND version = %s RETURNING info, mod",
                           (module, version))
            partial = cursor.fetchone()
            if partial is not None and bytes(partial[1]) != mod:
                raise ModChanged(module, version)
            cursor.execute(
                # created: the insert's time, not the transaction's start (the chunks may take minutes), so that
                # /index readers paging by time miss no version.
                "INSERT INTO athens_versions (module, version, info, mod, size, blob, chunks, created) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, clock_timestamp()) ON CONFLICT DO NOTHING RETURNING 1",
                (module, version, info if partial is None or partial[0] is None else partial[0], mod, size, blob, count),
            )
            if cursor.fetchone() is None:
                raise _AlreadyStored()
            return True

        try:
            return bool(await self._interaction(transaction))
        except _AlreadyStored:
            return False

    def save_mod(self, module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        def transaction(cursor: Any) -> bool:
            cursor.execute("SELECT 1 FROM athens_versions WHERE module = %s AND version = %s", (module, version))
            if cursor.fetchone() is not None:
                return False
            cursor.execute(
                "INSERT INTO athens_gomods (module, version, info, mod) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (module, version) DO UPDATE SET info = EXCLUDED.info "
                "WHERE athens_gomods.info IS NULL AND EXCLUDED.info IS NOT NULL RETURNING 1",
                (module, version, info, mod))
            return cursor.fetchone() is not None

        return ensureDeferred(self._interaction(transaction))

    def delete(self, module: str, version: str) -> Deferred[None]:
        def transaction(cursor: Any) -> None:
            cursor.execute("DELETE FROM athens_versions WHERE module = %s AND version = %s RETURNING blob",
                           (module, version))
            row = cursor.fetchone()
            cursor.execute("DELETE FROM athens_gomods WHERE module = %s AND version = %s RETURNING 1",
                           (module, version))
            if row is None and cursor.fetchone() is None:
                raise NotFound(f"{module}@{version}: not found")
            if row is not None:
                cursor.execute("DELETE FROM athens_chunks WHERE blob = %s", (row[0],))
            cursor.execute("SELECT nextval('athens_deletions')")

        return ensureDeferred(self._interaction(transaction))

    def deletions(self) -> Deferred[str]:
        async def read() -> str:
            rows = await self._query("SELECT last_value, is_called FROM athens_deletions")
            return f"{rows[0][0]}:{rows[0][1]}"

        return ensureDeferred(read())

    def catalog(self, token: str, limit: int) -> Deferred[CatalogPage]:
        async def page() -> CatalogPage:
            path, _, version = token.rpartition("@") if token else ("", "", "")
            limit_ = max(limit, 1)
            rows = await self._query(
                "SELECT module, version FROM athens_versions WHERE (module, version) > (%s, %s) "
                "ORDER BY module, version LIMIT %s", (path, version, limit_ + 1))
            items = [ModuleVersion(m, v) for m, v in rows[:limit_]]
            return CatalogPage(items, str(items[-1]) if len(rows) > limit_ else "")

        return ensureDeferred(page())

    def index(self, since: float, limit: int) -> Deferred[list[IndexLine]]:
        async def lines() -> list[IndexLine]:
            if limit <= 0:
                return []
            rows = await self._query(
                "SELECT module, version, extract(epoch FROM created) FROM athens_versions "
                "WHERE created >= to_timestamp(%s) ORDER BY created, module, version LIMIT %s", (since, limit))
            return [IndexLine(m, v, float(saved)) for m, v, saved in rows]

        return ensureDeferred(lines())

    def touch(self, module: str, version: str) -> Deferred[None]:
        async def used() -> None:
            await self._interaction(lambda cursor: cursor.execute(
                "UPDATE athens_versions SET used = now() WHERE module = %s AND version = %s", (module, version)))

        return ensureDeferred(used())

    def last_used(self, module: str, version: str) -> Deferred[float]:
        async def when() -> float:
            rows = await self._query(
                "SELECT extract(epoch FROM coalesce(used, created)) FROM athens_versions "
                "WHERE module = %s AND version = %s", (module, version))
            if not rows:
                raise NotFound(f"{module}@{version}: not found")
            return float(rows[0][0])

        return ensureDeferred(when())

    def summary(self) -> Deferred[Summary]:
        """Counted by the database; the size is its tables' (indexes and TOAST included)."""

        async def count() -> Summary:
            (modules, versions), = await self._query("SELECT count(DISTINCT module), count(*) FROM athens_versions")
            (size,), = await self._query(
                "SELECT coalesce(sum(pg_total_relation_size(t)), 0) FROM "
                "unnest(ARRAY['athens_versions', 'athens_chunks', 'athens_gomods']::regclass[]) AS t")
            return Summary(int(modules), int(versions), int(size), "the PostgreSQL tables")

        return ensureDeferred(count())

    def ping(self) -> Deferred[None]:
        async def check() -> None:
            await self._query("SELECT 1")

        return ensureDeferred(check())

    def close(self) -> Deferred[None]:
        # close() joins the pool's threads: not on the reactor thread, which a
        # save in progress may be waiting on for its next chunk.
        return deferToThread(self.pool.close)


class _AlreadyStored(Exception):
    """Rolls back a save whose version another writer stored first."""


def _migrate(cursor: Any) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(7261541)")  # one node migrates at a time
    cursor.execute("CREATE TABLE IF NOT EXISTS athens_schema (version integer NOT NULL)")
    cursor.execute("SELECT max(version) FROM athens_schema")
    current = cursor.fetchone()[0] or 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[version]:
            cursor.execute(statement)
        cursor.execute("INSERT INTO athens_schema (version) VALUES (%s)", (version,))
