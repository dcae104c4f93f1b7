"""
Run a child process without blocking the reactor, bounded in time, always reaped.

The child runs in a process group of its own (through ``setsid``), so a
timeout kills it and every process it started (git, ssh): no orphans keep
working for a request nobody waits for.  Output is kept up to a cap.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: Keep at most this much of stdout and of stderr.
OUTPUT_CAP = 4 << 20
SETSID = shutil.which("setsid")


class ProcessTimeout(Exception):
    pass


@attrs.frozen
class Result:
    code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.sizes = [0, 0]
        self.ended: Deferred[BaseException] = Deferred()

    def _keep(self, index: int, into: list[bytes], data: bytes) -> None:
        room = OUTPUT_CAP - self.sizes[index]
        if room > 0:
            into.append(data[:room])
            self.sizes[index] += min(room, len(data))

    def outReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self._keep(0, self.out, data)

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self._keep(1, self.err, data)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.ended.callback(reason.value)  # the value: a Failure would fire the errback


async def run(reactor: Any, argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float) -> Result:
    """Run ``argv``; raise ProcessTimeout (after killing its group) if it outlives ``timeout``."""
    proto = _Collect()
    args = [SETSID, *argv] if SETSID else list(argv)
    transport = reactor.spawnProcess(proto, args[0], args, env=dict(env), path=cwd)
    pid = transport.pid
    timed_out = []

    def kill() -> None:
        timed_out.append(True)
        try:
            os.killpg(pid, signal.SIGKILL) if SETSID else os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    timer = reactor.callLater(timeout, kill)
    try:
        value = await proto.ended
    finally:
        if timer.active():
            timer.cancel()
    if timed_out:
        raise ProcessTimeout(f"{argv[0]} killed after {timeout:g}s")
    code = value.exitCode if isinstance(value, (ProcessDone, ProcessTerminated)) else None
    sig = value.signal if isinstance(value, ProcessTerminated) else None
    if SETSID and pid is not None:
        # Whatever the child left running in its group goes with it.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return Result(code, sig, b"".join(proto.out), b"".join(proto.err))
