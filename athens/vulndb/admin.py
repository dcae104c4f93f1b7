"""``athens-admin vulndb``: load the vulnerability database from a file, and say what is stored."""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone

from twisted.internet.threads import deferToThread

from athens.storage.interface import IStorage
from athens.vulndb.errors import InvalidDatabase
from athens.vulndb.osv import timestamp
from athens.vulndb.snapshot import from_archive
from athens.vulndb.store import MemoryVulnStore, State, vuln_store


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    vulndb = sub.add_parser("vulndb", help="the copy of the Go vulnerability database served at /vuln/")
    commands = vulndb.add_subparsers(dest="vulndb_command", required=True)
    load = commands.add_parser(
        "import", help="load it from a file: vuln.go.dev's vulndb.zip, or a zip or tar of the database's tree",
        description="Checks every index and entry; a copy older than the stored one is refused.")
    load.add_argument("file")
    commands.add_parser("status", help="the stored copy: when the database was modified, entries, age")


async def run(args: argparse.Namespace, storage: IStorage) -> int:
    if args.vulndb_command == "import":
        return await import_file(storage, args.file)
    return await status(storage)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def import_file(storage: IStorage, path: str) -> int:
    """Store the database in ``path`` (every running daemon serves it within seconds); 1 if it is refused."""
    store = vuln_store(storage)
    if isinstance(store, MemoryVulnStore):
        print(f"athens-admin vulndb import: {storage.name} storage keeps nothing after this command")
        return 1
    try:
        snapshot = await deferToThread(lambda: from_archive(_read(path)))
    except OSError as e:
        print(f"athens-admin vulndb import: {path}: {e.strerror}")
        return 1
    except InvalidDatabase as e:
        print(f"athens-admin vulndb import: {path} is not a usable Go vulnerability database: {e}")
        return 1
    stored = await store.state()
    if stored is not None and stored.digest == snapshot.digest:
        print(f"already stored: {snapshot.entries} entries, modified {snapshot.modified}")
        return 0
    if stored is not None and timestamp(stored.modified, "stored") > snapshot.modified_at:
        print(f"refused: the stored copy is newer (modified {stored.modified}) than {path} "
              f"(modified {snapshot.modified})")
        return 1
    await store.save(State(snapshot.digest, snapshot.modified, time.time(), f"import {os.path.basename(path)}"),
                     snapshot.archive)
    print(f"imported {snapshot.entries} entries, modified {snapshot.modified}")
    return 0


async def status(storage: IStorage) -> int:
    """One line on the stored copy; 1 if there is none."""
    state = await vuln_store(storage).state()
    if state is None:
        print("no vulnerability database stored")
        return 1
    checked = datetime.fromtimestamp(state.checked, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"modified {state.modified}, last known current {checked} "
          f"({time.time() - state.checked:.0f}s ago), from {state.source or '?'}, sha256 {state.digest}")
    return 0
