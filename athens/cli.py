"""
``athens-admin``: operator commands that work on a store directly.

The daemon need not run; the storage is opened from the same configuration
(file, ``ATHENS_*`` variables, options) the daemon uses.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from athens.config import STORAGE_TYPES, ConfigError, load
from athens.importer import Report, import_cache
from athens.storage.factory import open_storage


class ProgressBar:
    """A one-line bar on a terminal; a line every 10% elsewhere (CI logs)."""

    def __init__(self, stream: IO[str], width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.last_decile = -1

    def __call__(self, done: int, total: int, report: Report, current: str) -> None:
        fraction = done / total if total else 1.0
        counts = f"{done}/{total} imported {len(report.imported)} refused {len(report.refused)}"
        if self.tty:
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {counts} {current[:60]:<60}")
            if done == total:
                self.stream.write("\n")
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            self.stream.write(f"{int(fraction * 100):3d}% {counts}\n")
        self.stream.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="athens-admin", description="athens-py administration commands")
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
    return p


async def _import(args: argparse.Namespace) -> int:
    config = load(args.config, overrides={"storage_type": args.storage, "disk_root": args.storage_root})
    storage = open_storage(config)
    try:
        report = await import_cache(storage, args.cache, ProgressBar(sys.stderr))
    finally:
        await storage.close()
    print(report.summary())
    return 1 if report.refused else 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)

    async def run(reactor: object) -> None:
        try:
            code = await _import(args)
        except (ConfigError, FileNotFoundError) as e:
            print(f"athens-admin: {e}", file=sys.stderr)
            code = 2
        if code:
            raise SystemExit(code)

    react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
