"""``twistd athens``: command-line options and the service they make."""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from twisted.python import usage

from athens.config import STORAGE_TYPES, ConfigError, load

if TYPE_CHECKING:
    from athens.service import AthensService


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the athens-py Go module proxy. Configuration comes from a TOML file with Athens' keys "
        "(--config, or ./athens.toml), then ATHENS_* environment variables, then these options."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file in Athens' format [default: ./athens.toml if present]."],
        ["listen", "l", None, "Twisted endpoint to listen on, e.g. tcp:3000 (overrides Port) [default: tcp:3000]."],
        ["storage", "s", None, f"Storage type: {', '.join(STORAGE_TYPES)} (overrides StorageType) [default: disk]."],
        ["storage-root", None, None, "Disk storage directory (overrides Storage.Disk.RootPath) "
                                     "[default: $XDG_DATA_HOME/athens-py/storage]."],
        ["log-level", None, None, "debug, info, warn, error (overrides LogLevel) [default: info]."],
        ["log-format", None, None, "plain or json (overrides LogFormat) [default: plain]."],
        ["workers", "w", None, "Processes serving the port [default: one per core; 1 with memory storage or an "
                               "ssl: or unix: endpoint]."],
    ]

    def opt_version(self) -> None:  # noqa: N802 - Twisted's name
        """Print athens-py's version (and Twisted's) and exit."""
        from twisted import __version__ as twisted_version

        from athens import __version__

        print(f"athens-py {__version__} (Twisted {twisted_version})")
        sys.exit(0)

    def postOptions(self) -> None:  # noqa: N802
        # Set by the daemon for the processes it starts (never by an operator): not options, so not in --help.
        from athens.workers import INHERIT_ENV, WORKER_ENV

        self["worker"] = bool(os.environ.get(WORKER_ENV))
        self["inherit-fd"] = os.environ.get(INHERIT_ENV) or None


class StartError(Exception):
    """Why the daemon cannot start, in the words of what the operator wrote."""


def makeService(options: Options) -> "AthensService":
    """The service twistd runs; a mistake in the configuration is one line on stderr and exit status 1."""
    try:
        return _make_service(options)
    except ConfigError as e:
        message = f"configuration error: {e}"
    except StartError as e:
        message = str(e)
    print(f"twistd athens: {message}", file=sys.stderr)
    raise SystemExit(1)


def _check_endpoint(endpoint: str, named_by: str, reactor: Any) -> None:
    """A listening endpoint that parses (an unknown type or a bad port is refused before anything starts)."""
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, endpoint)
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise StartError(f"{named_by} {endpoint!r}: {e}") from None


def _make_service(options: Options) -> "AthensService":
    from twisted.internet import reactor

    from athens.storage.factory import open_storage

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
    endpoint = options["listen"] or config.listen_endpoint()
    if not options["inherit-fd"]:
        _check_endpoint(endpoint, "--listen" if options["listen"] else "Port (or UnixSocket, TLS files)", reactor)
    try:
        workers = int(options["workers"]) if options["workers"] else default_workers(config.storage_type, endpoint)
    except ValueError:
        raise StartError(f"--workers: {options['workers']!r} is not a number") from None
    if workers < 1 or (workers > 1 and config.storage_type == "memory"):
        raise StartError("--workers: at least 1, and only 1 with memory storage (nothing would be shared)")
    metrics_dir = ""
    if (workers > 1 or options["worker"]) and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several processes count into files they all read (set before prometheus_client is imported;
        # the workers inherit it); removed at a clean stop.
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="athens-metrics-")

    from athens.service import AthensService
    from athens.workers import ParentWatch, WorkerSupervisor, guard_port, shared_socket, systemd_socket, worker_argv

    if workers == 1 and not options["worker"]:
        return AthensService(config, storage, with_backlog(endpoint), reactor)
    guard = inherit = None
    try:
        if options["inherit-fd"]:  # a worker under socket activation
            sock = socket.socket(fileno=int(options["inherit-fd"]))
        elif (systemd := systemd_socket(endpoint, reactor)) is not None:
            sock, inherit = systemd, systemd.fileno()
        else:
            if not options["worker"]:
                guard = guard_port(endpoint)
            sock = shared_socket(endpoint)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StartError(f"{endpoint}: address already in use (another athens-py serves this port)") from None
        raise StartError(f"{endpoint}: {e}") from None
    except ValueError as e:
        raise StartError(f"--workers {workers} needs a tcp: or systemd: endpoint, not {endpoint!r} ({e})") from None
    sock.setblocking(False)  # several processes accept from it: one that finds nothing must not block
    service = AthensService(config, storage, endpoint, reactor, adopt=(sock.fileno(), sock.family))
    service.shared_socket, service.port_guard = sock, guard  # both open for the service's whole life
    service.own_metrics_dir = metrics_dir
    if not options["worker"]:
        WorkerSupervisor(workers - 1, worker_argv(options, endpoint), reactor,
                         inherit=inherit).setServiceParent(service)
    else:
        service.is_worker = True
        ParentWatch(reactor).setServiceParent(service)
    return service


def with_backlog(endpoint: str) -> str:
    """A TCP endpoint queues up to 1,024 connections, as several workers' shared socket does (Twisted's default: 50)."""
    if endpoint.startswith(("tcp:", "tcp6:")) and "backlog=" not in endpoint:
        return endpoint + ":backlog=1024"
    return endpoint


def default_workers(storage_type: str, endpoint: str = "tcp:") -> int:
    """One process per core, unless the storage lives in the process or the endpoint cannot be shared (TLS, Unix)."""
    if storage_type == "memory" or not endpoint.startswith(("tcp:", "systemd:")):
        return 1
    return max(os.cpu_count() or 1, 1)


def main() -> None:  # pragma: no cover - convenience for `python -m athens.tap`
    from twisted.scripts.twistd import run

    sys.argv[1:1] = ["-n", "athens"]
    run()
