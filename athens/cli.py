"""
``athens-admin``: operator commands that work on a store directly
(import, list, verify, delete, gc, copy, prefetch, vulndb), and the key pair of the
organisation's checksum database (sumdb-key).

The daemon need not run; the storage is opened from the same configuration
(file, ``ATHENS_*`` variables, options) the daemon uses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from twisted.internet.threads import deferToThread

from athens import __version__
from athens.config import STORAGE_TYPES, Config, ConfigError, load
from athens.importer import import_cache
from athens.maintenance import everything, verify_version
from athens.module import InvalidInput, check_path, check_version
from athens.modzip import InvalidZip
from athens.progress import ProgressBar
from athens.prefetch import JOBS, Outcome, Result, prefetch
from athens.storage.factory import open_storage
from athens.storage.interface import IStorage, ISweep, NotFound, StorageError
from athens.sumdb import NoteError, SignerKey
from athens.vulndb import admin as vulndb_admin
from athens.wanted import Wanted, read_wanted


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="athens-admin", description="athens-py administration commands")
    p.add_argument("--version", action="version", version=f"athens-admin (athens-py) {__version__}")
    p.add_argument("--config", "-c", help="TOML configuration file (Athens' format)")
    p.add_argument("--storage", choices=STORAGE_TYPES, help="storage type (overrides StorageType)")
    p.add_argument("--storage-root", help="disk storage directory (overrides Storage.Disk.RootPath)")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import",
        help="import a Go module download cache ($GOMODCACHE/cache/download) into storage",
        description="Validates every version (path, .info, zip rules, recorded hash) and skips bad ones.",
    )
    imp.add_argument("cache", help="GOMODCACHE directory (or its cache/download)")
    vulndb_admin.add_parser(sub)
    sub.add_parser("list", help="list the cached module versions (module version, a line each)")
    sub.add_parser("verify", help="recompute every zip's h1: hash and check the module zip rules (go.sum lines out)")
    delete = sub.add_parser("delete", help="delete module versions from the cache")
    delete.add_argument("targets", nargs="+", metavar="module@version")
    gc = sub.add_parser("gc", help="delete versions nobody has used for N days")
    gc.add_argument("--unused-days", type=float, required=True, help="delete what was last used before this many days")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    key = sub.add_parser("sumdb-key", help="create the key pair of the organisation's checksum database",
                         description="Writes the signer key to a new file (mode 600) and prints the verifier key "
                                     "that clients put in GOSUMDB.")
    key.add_argument("name", help="the database's name, such as sum.example.com (OwnSumDB.Name)")
    key.add_argument("--key-file", help="where to write the signer key (default: OwnSumDB.KeyFile, else NAME.key)")
    copy = sub.add_parser("copy", help="copy every cached version into another storage (disk to redis, ...)")
    copy.add_argument("--to-config", help="TOML configuration naming the target storage")
    copy.add_argument("--to-storage", choices=STORAGE_TYPES, help="target storage type")
    copy.add_argument("--to-storage-root", help="target disk storage directory")
    pre = sub.add_parser(
        "prefetch", help="fill the store with every module version a build needs (go.sum, go.mod, or a list)",
        description="Reads go.sum (zips, and /go.mod lines as go.mod-only versions), go.mod (its requirements) or "
                    "lines of 'path version' / 'path@version' (go list -m all), and fetches what the store lacks "
                    "through the configured origin, several at once. Exit status 1 if any failed.")
    pre.add_argument("files", nargs="+", metavar="FILE", help="go.sum, go.mod or a list of module versions")
    pre.add_argument("--jobs", "-j", type=int, default=JOBS, help=f"versions fetched at once (default {JOBS})")
    pre.add_argument("--verify", action="store_true",
                     help="also check zips already stored against go.sum's hashes (reads them all)")
    return p


async def _import(args: argparse.Namespace, storage: IStorage) -> int:
    report = await import_cache(storage, args.cache, ProgressBar(sys.stderr))
    print(report.summary())
    return 1 if report.refused else 0


async def _list(args: argparse.Namespace, storage: IStorage) -> int:
    async for item in everything(storage):
        print(f"{item.path} {item.version}")
    return 0


async def _verify(args: argparse.Namespace, storage: IStorage) -> int:
    bad = 0
    async for item in everything(storage):
        try:
            print(f"{item.path} {item.version} {await verify_version(storage, item)}")
        except (InvalidZip, ValueError) as e:
            bad += 1
            print(f"{item.path} {item.version} BAD: {e}")
    print(f"{bad} bad" if bad else "all good", file=sys.stderr)
    return 1 if bad else 0


async def _delete(args: argparse.Namespace, storage: IStorage) -> int:
    missing = 0
    for target in args.targets:
        module, _, version = target.rpartition("@")
        try:
            check_path(module)
            check_version(module, version)
        except InvalidInput as e:
            missing += 1
            print(f"not module@version: {target!r} ({e})", file=sys.stderr)
            continue
        try:
            await storage.delete(module, version)
            print(f"deleted {target}")
        except NotFound:
            missing += 1
            print(f"not found: {target}", file=sys.stderr)
    return 1 if missing else 0


async def _copy(args: argparse.Namespace, storage: IStorage) -> int:
    if not (args.to_config or args.to_storage or args.to_storage_root):
        print("athens-admin copy: name the target (--to-config, --to-storage, --to-storage-root)", file=sys.stderr)
        return 2
    target_config = load(args.to_config, environ={},
                         overrides={"storage_type": args.to_storage, "disk_root": args.to_storage_root})
    if target_config.storage_type == "memory":
        print("athens-admin copy: a memory store ends with this command: nothing would be kept", file=sys.stderr)
        return 2
    target = open_storage(target_config)
    items = [item async for item in everything(storage)]
    bar = ProgressBar(sys.stderr)
    copied = present = 0
    try:
        for done, item in enumerate(items):
            bar.step(done, len(items), f"copied {copied} already there {present}", str(item))
            blob = await storage.zip(item.path, item.version)
            try:
                stored = await target.save(item.path, item.version, await storage.info(item.path, item.version),
                                           await storage.go_mod(item.path, item.version), blob.chunks())
            finally:
                blob.close()
            copied, present = copied + stored, present + (not stored)
        bar.step(len(items), len(items), f"copied {copied} already there {present}", "")
    finally:
        await target.close()
    print(f"copied {copied}, already there {present}, of {len(items)}")
    return 0


async def _gc(args: argparse.Namespace, storage: IStorage) -> int:
    cutoff = time.time() - args.unused_days * 86400
    stale = []
    async for item in everything(storage):
        try:
            if await storage.last_used(item.path, item.version) < cutoff:
                stale.append(item)
        except NotFound:
            continue  # deleted meanwhile
    for item in stale:
        if not args.dry_run:
            try:
                await storage.delete(item.path, item.version)
            except NotFound:
                continue
        print(f"{'would delete' if args.dry_run else 'deleted'} {item}")
    print(f"{len(stale)} versions unused for {args.unused_days:g} days", file=sys.stderr)
    if ISweep.providedBy(storage) and not args.dry_run:
        left = await storage.sweep()
        for key in left:
            print(f"removed {key} (left by a killed save)")
    return 0


async def _prefetch(args: argparse.Namespace, storage: IStorage, config: Config) -> int:
    from twisted.internet import reactor

    from athens.service import build_origin

    if args.jobs < 1:
        print("athens-admin prefetch: --jobs must be 1 or more", file=sys.stderr)
        return 2
    wanted: dict[str, Wanted] = {}
    unreadable: list[str] = []
    for name in args.files:
        try:
            text = await deferToThread(_read_text, name)
        except (OSError, UnicodeDecodeError) as e:
            print(f"athens-admin prefetch: {name}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
            return 2
        found, errors = read_wanted(name, text)
        unreadable += errors
        for item in found:
            before = wanted.get(str(item))
            wanted[str(item)] = item if before is None or item.whole or not before.whole else before
    origin = build_origin(config, storage, reactor)
    bar = ProgressBar(sys.stderr)
    counts: dict[Result, int] = {}

    def progress(done: int, total: int, outcome: Outcome) -> None:
        counts[outcome.result] = counts.get(outcome.result, 0) + 1
        if outcome.result is Result.FAILED:
            bar.note(outcome.line())
        bar.step(done, total, ", ".join(f"{r.value} {n}" for r, n in counts.items()), str(outcome.wanted))

    try:
        report = await prefetch(origin, list(wanted.values()), args.jobs, progress, args.verify)
    finally:
        bar.close()
        if origin.http_pool is not None:
            await origin.http_pool.closeCachedConnections()
        if origin.stash.lock is not None:
            await origin.stash.lock.close()
    report.unreadable += unreadable
    print(report.summary())
    return 1 if report.failed else 0


def _read_text(name: str) -> str:
    with open(name, encoding="utf-8") as f:
        return f.read(64 << 20)


def _sumdb_key(args: argparse.Namespace, config: Config) -> int:
    """A new key pair: the signer key into a file nobody else may read, the verifier key to stdout."""
    try:
        key = SignerKey.generate(args.name)
    except NoteError as e:
        print(f"athens-admin sumdb-key: {e}", file=sys.stderr)
        return 2
    path = args.key_file or config.own_sumdb_key_file or f"{args.name}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        print(f"athens-admin sumdb-key: cannot create {path}: {e.strerror} (an existing key is never overwritten)",
              file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(key.text() + "\n")
    vkey = key.verifier().text()
    print(vkey)
    print(f"wrote the signer key of {args.name} to {path}; configure OwnSumDB.Name = {args.name!r} and "
          f"OwnSumDB.KeyFile = {os.path.abspath(path)!r}, and give clients\n"
          f"  GOSUMDB=\"{vkey} https://<this proxy>/sumdb/{args.name}\"", file=sys.stderr)
    return 0


COMMANDS = {"import": _import, "list": _list, "verify": _verify, "delete": _delete, "copy": _copy, "gc": _gc,
            "vulndb": vulndb_admin.run}


async def _run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    config = load(args.config, overrides={"storage_type": args.storage, "disk_root": args.storage_root})
    if args.command == "sumdb-key":  # needs no store
        return _sumdb_key(args, config)
    storage = open_storage(config, reactor)
    try:
        if args.command == "prefetch":  # it fills from the origin: it needs the whole configuration
            return await _prefetch(args, storage, config)
        return await COMMANDS[args.command](args, storage)
    finally:
        await storage.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)

    async def run(reactor: object) -> None:
        try:
            code = await _run(args)
        except (ConfigError, FileNotFoundError, StorageError) as e:
            print(f"athens-admin: {e}", file=sys.stderr)
            code = 2
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
