"""
Several processes on one port: every process binds the port with
SO_REUSEPORT, so the kernel spreads new connections over them; the parent
serves too and keeps N-1 worker processes running, restarting any that dies.
The parent also holds an abstract Unix socket named for the port, so that a
second daemon on the same port fails to start instead of taking a share of
the traffic.  Under systemd socket activation the workers share the socket
systemd passed (inherited, as descriptor 3 + index).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

log = Logger()

_TCP = re.compile(r"^tcp:(?:port=)?(?P<port>[0-9]+)(?::interface=(?P<host>(?:\\:|[^:])+))?$")


def shared_socket(endpoint: str) -> socket.socket:
    """A listening socket for a ``tcp:PORT[:interface=HOST]`` endpoint that other processes may bind too."""
    m = _TCP.match(endpoint)
    if not m:
        raise ValueError(f"several workers need a tcp: endpoint (tcp:3000 or tcp:3000:interface=...), not {endpoint!r}")
    host = (m.group("host") or "").replace("\\:", ":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), int(m.group("port"))))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def guard_port(endpoint: str) -> socket.socket:
    """
    Claim ``endpoint``'s port for this daemon (SO_REUSEPORT would let a second
    one share it); OSError EADDRINUSE if another athens-py has it.
    """
    m = _TCP.match(endpoint)
    if not m:
        raise ValueError(f"not a tcp: endpoint: {endpoint!r}")
    guard = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        guard.bind(f"\0athens-py:tcp:{m.group('port')}")  # abstract: no file, gone with the process
    except OSError:
        guard.close()
        raise
    return guard


def systemd_socket(endpoint: str, reactor: Any) -> socket.socket | None:
    """The listening socket systemd passed for a ``systemd:`` endpoint; None for other endpoints."""
    if not endpoint.startswith("systemd:"):
        return None
    from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString

    # Twisted read (and removed) LISTEN_PID and LISTEN_FDS when its endpoints were imported: ask it.
    adopted = serverFromString(reactor, endpoint)
    if not isinstance(adopted, AdoptedStreamServerEndpoint):
        raise ValueError(f"{endpoint!r} is not a socket systemd passed")
    return socket.socket(fileno=adopted.fileno)


#: A worker process: bind the port with SO_REUSEPORT, start no others (set by the daemon for its workers).
WORKER_ENV = "TWISTD_ATHENS_WORKER"
#: A worker serves this inherited listening descriptor (systemd's socket).
INHERIT_ENV = "TWISTD_ATHENS_INHERIT_FD"


class AdoptedPort(Service):
    """Serve a listening socket made outside Twisted's endpoints (SO_REUSEPORT)."""

    def __init__(self, fd: int, family: int, factory: Any, reactor: Any) -> None:
        self.fd, self.family, self.factory, self.reactor = fd, family, factory, reactor
        self.port: Any = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self.port = self.reactor.adoptStreamPort(self.fd, self.family, self.factory)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self.port is None:
            return succeed(None)
        port, self.port = self.port, None
        return port.stopListening()  # type: ignore[no-any-return]


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: "WorkerSupervisor", index: int) -> None:
        self.supervisor, self.index = supervisor, index
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.ended.callback(None)
        self.supervisor.ended(self.index, reason)


class WorkerSupervisor(Service):
    """Keeps ``count`` worker processes running; each binds the port itself."""

    def __init__(self, count: int, argv: Sequence[str], reactor: Any, restart_delay: float = 1.0,
                 inherit: int | None = None) -> None:
        self.count, self.argv, self.reactor = count, list(argv), reactor
        self.restart_delay = restart_delay
        #: A listening descriptor the workers get under the same number (systemd's socket).
        self.inherit = inherit
        self.workers: dict[int, tuple[_Worker, Any]] = {}

    def startService(self) -> None:  # noqa: N802
        super().startService()
        for index in range(self.count):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        if not self.running:
            return
        proto = _Worker(self, index)
        fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        if self.inherit is not None:
            fds[self.inherit] = self.inherit
        env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
        env[WORKER_ENV] = "1"
        if self.inherit is not None:
            env[INHERIT_ENV] = str(self.inherit)
        transport = self.reactor.spawnProcess(proto, self.argv[0], self.argv, env=env, childFDs=fds)
        self.workers[index] = (proto, transport)
        log.info("worker {index} started (pid {pid})", index=index + 1, pid=transport.pid)

    def ended(self, index: int, reason: Any) -> None:
        proto_transport = self.workers.pop(index, None)
        if proto_transport is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(proto_transport[1].pid)  # its live gauges stop counting
        if self.running:
            log.warn("worker {index} ended ({why}); restarting it", index=index + 1, why=reason.getErrorMessage())
            self.reactor.callLater(self.restart_delay, self.spawn, index)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        waiting = []
        for proto, transport in list(self.workers.values()):
            waiting.append(proto.ended)
            try:
                transport.signalProcess("TERM")  # each worker drains its own requests
            except Exception:
                pass
        return DeferredList(waiting).addCallback(lambda _: None)


def worker_argv(options: Any, endpoint: str) -> list[str]:
    """The command line of a worker: this daemon's options, on the same port (the environment says it is a worker)."""
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
            "athens", "--listen", endpoint]
    for name in ("config", "storage", "storage-root", "log-level", "log-format"):
        if options[name] is not None:
            argv += [f"--{name}", options[name]]
    return argv




class ParentWatch(Service):
    """A worker stops (cleanly) when the daemon that started it is gone, killed or crashed: no orphan keeps the port."""

    def __init__(self, reactor: Any, interval: float = 1.0) -> None:
        from twisted.internet.task import LoopingCall

        self.reactor, self.daemon_pid = reactor, os.getppid()
        self.check = LoopingCall(self._check)
        self.check.clock = reactor
        self.interval = interval

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self.check.start(self.interval, now=False)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self.check.running:
            self.check.stop()
        return succeed(None)

    def _check(self) -> None:
        if os.getppid() != self.daemon_pid:
            log.warn("the daemon that started this worker is gone: stopping")
            self.check.stop()
            self.reactor.stop()
