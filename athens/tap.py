"""``twistd athens``: command-line options and the service they make."""

from __future__ import annotations

import sys

from twisted.python import usage

from athens.config import STORAGE_TYPES, ConfigError, load
from athens.service import AthensService
from athens.storage.factory import open_storage


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the athens-py Go module proxy. Configuration comes from a TOML file with Athens' keys "
        "(--config, or ./athens.toml), then ATHENS_* environment variables, then these options."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (Athens' format)."],
        ["listen", "l", None, "Twisted endpoint to listen on, e.g. tcp:3000 (overrides Port)."],
        ["storage", "s", None, f"Storage type: {', '.join(STORAGE_TYPES)} (overrides StorageType)."],
        ["storage-root", None, None, "Disk storage directory (overrides Storage.Disk.RootPath)."],
        ["log-level", None, None, "debug, info, warn, error (overrides LogLevel)."],
        ["log-format", None, None, "plain or json (overrides LogFormat)."],
    ]


def makeService(options: Options) -> AthensService:
    from twisted.internet import reactor

    try:
        config = load(
            options["config"],
            overrides={
                "storage_type": options["storage"],
                "disk_root": options["storage-root"],
                "log_level": options["log-level"],
                "log_format": options["log-format"],
            },
        )
        storage = open_storage(config, reactor)
    except ConfigError as e:
        # twistd prints a usage error with our message and exits non-zero.
        raise usage.UsageError(f"configuration error: {e}") from None
    endpoint = options["listen"] or config.listen_endpoint()
    return AthensService(config, storage, endpoint, reactor)


def main() -> None:  # pragma: no cover - convenience for `python -m athens.tap`
    from twisted.scripts.twistd import run

    sys.argv[1:1] = ["-n", "athens"]
    run()
