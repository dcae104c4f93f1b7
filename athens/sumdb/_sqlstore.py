"""
The log in SQL: SQLite in a file under the disk storage root, or PostgreSQL beside the shared store.

Two tables, keyed by the database's name: ``athens_sumdb_records`` (id, the
``module@version`` key, the record text) and ``athens_sumdb_hashes``
(stored hash index, hash).  An append is one transaction that first takes
the log's write lock (SQLite's ``BEGIN IMMEDIATE``, which also orders the
worker processes of one node; a PostgreSQL advisory lock per name, which
orders the nodes), then checks the key and the size and writes the record
and its hashes.  SQLite runs with a write-ahead log and full ``fsync``: a
record a client has seen in a signed tree head survives a power cut.
All database work runs in adbapi's threads.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Callable, Sequence

import attrs
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from athens.storage.interface import StorageError, StorageUnavailable
from athens.sumdb._store import ILogStore, LogCorrupt
from athens.sumdb._tlog import stored_hash_index

_RECORDS = "athens_sumdb_records"
_HASHES = "athens_sumdb_hashes"


@attrs.frozen
class _Dialect:
    name: str
    #: The driver's placeholder.
    param: str
    schema: tuple[str, ...]
    #: Statements that open an append's transaction and take the log's write lock (``%(p)s``: the name).
    lock: tuple[str, ...]
    #: Turns a driver error into StorageUnavailable (or leaves it).
    errors: Callable[[Exception], Exception]


def _sqlite_errors(e: Exception) -> Exception:
    if isinstance(e, sqlite3.OperationalError):  # locked past the timeout, disk full, file unreadable
        return StorageUnavailable(f"sqlite: {e}")
    if isinstance(e, sqlite3.Error):
        return StorageError(f"sqlite: {e}")
    return e


def _postgres_errors(e: Exception) -> Exception:
    from athens.storage.sql import _unavailable

    return _unavailable(e)


SQLITE = _Dialect(
    "disk", "?",
    (f"""CREATE TABLE IF NOT EXISTS {_RECORDS} (db TEXT NOT NULL, id INTEGER NOT NULL, key TEXT NOT NULL,
             text BLOB NOT NULL, PRIMARY KEY (db, id), UNIQUE (db, key))""",
     f"""CREATE TABLE IF NOT EXISTS {_HASHES} (db TEXT NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
             PRIMARY KEY (db, idx))"""),
    ("BEGIN IMMEDIATE",),
    _sqlite_errors,
)

POSTGRES = _Dialect(
    "postgres", "%s",
    (f"""CREATE TABLE IF NOT EXISTS {_RECORDS} (db text COLLATE "C" NOT NULL, id bigint NOT NULL,
             key text COLLATE "C" NOT NULL, text bytea NOT NULL, PRIMARY KEY (db, id), UNIQUE (db, key))""",
     f"""CREATE TABLE IF NOT EXISTS {_HASHES} (db text COLLATE "C" NOT NULL, idx bigint NOT NULL,
             hash bytea NOT NULL, PRIMARY KEY (db, idx))"""),
    ("SELECT pg_advisory_xact_lock(7261542, hashtext(%s))",),
    _postgres_errors,
)


def _sqlite_open(connection: Any) -> None:
    """
    In the pool's thread, for every new connection.  Switching a new file to
    the write-ahead log answers "locked" at once, without waiting, while
    another process or connection opens it too: try again for a while.
    """
    deadline = time.monotonic() + 60
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    connection.execute("PRAGMA synchronous=FULL")


@implementer(ILogStore)
@attrs.define
class SQLLogStore:
    pool: adbapi.ConnectionPool
    db: str
    dialect: _Dialect
    _ready: bool = False

    @property
    def name(self) -> str:
        return self.dialect.name

    @classmethod
    def sqlite(cls, path: str, db: str) -> SQLLogStore:
        """The log in a SQLite file (created with its directory); safe for several processes on one machine."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        pool = adbapi.ConnectionPool("sqlite3", path, check_same_thread=False, isolation_level=None, timeout=60,
                                     cp_min=1, cp_max=1, cp_openfun=_sqlite_open, cp_noisy=False)
        return cls(pool, db, SQLITE)

    @classmethod
    def postgres(cls, conninfo: str, db: str, max_connections: int = 4) -> SQLLogStore:
        pool = adbapi.ConnectionPool("psycopg", conninfo=conninfo, cp_min=1, cp_max=max_connections,
                                     cp_reconnect=True, cp_noisy=False, connect_timeout=10)
        return cls(pool, db, POSTGRES)

    def _sql(self, text: str) -> str:
        return text.replace("%s", self.dialect.param)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            if not self._ready:
                await self.pool.runInteraction(self._create)
                self._ready = True
            return await self.pool.runInteraction(fn, *args)
        except Exception as e:
            raise self.dialect.errors(e) from None

    def _create(self, cursor: Any) -> None:
        for statement in self.dialect.lock:
            cursor.execute(self._sql(statement), (self.db,) if "%s" in statement else ())
        for statement in self.dialect.schema:
            cursor.execute(statement)

    def _select(self, cursor: Any, sql: str, args: Sequence[Any]) -> list[Any]:
        cursor.execute(self._sql(sql), tuple(args))
        return list(cursor.fetchall())

    def size(self) -> Deferred[int]:
        return ensureDeferred(self._run(self._size))

    def _size(self, cursor: Any) -> int:
        rows = self._select(cursor, f"SELECT max(id) FROM {_RECORDS} WHERE db = %s", (self.db,))
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1

    def lookup(self, key: str) -> Deferred[int | None]:
        return ensureDeferred(self._run(self._lookup, key))

    def _lookup(self, cursor: Any, key: str) -> int | None:
        rows = self._select(cursor, f"SELECT id FROM {_RECORDS} WHERE db = %s AND key = %s", (self.db, key))
        return int(rows[0][0]) if rows else None

    def records(self, start: int, count: int) -> Deferred[list[bytes]]:
        def read(cursor: Any) -> list[bytes]:
            rows = self._select(cursor, f"SELECT id, text FROM {_RECORDS} WHERE db = %s AND id >= %s AND id < %s "
                                        "ORDER BY id", (self.db, start, start + count))
            if [int(r[0]) for r in rows] != list(range(start, start + count)):
                raise LogCorrupt(f"records {start}..{start + count - 1} are not all in the log")
            return [bytes(r[1]) for r in rows]

        return ensureDeferred(self._run(read))

    def hashes(self, indexes: Sequence[int]) -> Deferred[list[bytes]]:
        def read(cursor: Any) -> list[bytes]:
            if not indexes:
                return []
            wanted = sorted(set(indexes))
            rows = self._select(cursor, f"SELECT idx, hash FROM {_HASHES} WHERE db = %s AND idx IN "
                                        f"({', '.join(['%s'] * len(wanted))})", (self.db, *wanted))
            found = {int(r[0]): bytes(r[1]) for r in rows}
            if len(found) != len(wanted):
                raise LogCorrupt("a stored hash is missing")
            return [found[i] for i in indexes]

        return ensureDeferred(self._run(read))

    def append(self, key: str, text: bytes, size: int, hashes: Sequence[bytes]) -> Deferred[tuple[int, bool] | None]:
        def write(cursor: Any) -> tuple[int, bool] | None:
            for statement in self.dialect.lock:
                cursor.execute(self._sql(statement), (self.db,) if "%s" in statement else ())
            existing = self._lookup(cursor, key)
            if existing is not None:
                return existing, False
            if self._size(cursor) != size:
                return None
            first = stored_hash_index(0, size)
            cursor.execute(self._sql(f"INSERT INTO {_RECORDS} (db, id, key, text) VALUES (%s, %s, %s, %s)"),
                           (self.db, size, key, text))
            for offset, h in enumerate(hashes):
                cursor.execute(self._sql(f"INSERT INTO {_HASHES} (db, idx, hash) VALUES (%s, %s, %s)"),
                               (self.db, first + offset, h))
            return size, True

        return ensureDeferred(self._run(write))

    def close(self) -> Deferred[None]:
        return deferToThread(self.pool.close)
