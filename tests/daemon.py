"""Start the real daemon (`twistd -n athens`) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def http_status(url: str, timeout: float = 60) -> int:
    """The status a GET gets (the body read and dropped), errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def twistd() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


def admin_command() -> list[str]:
    return [sys.executable, "-m", "athens.cli"]


def source_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for our subprocesses: this source tree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATHENS_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["ATHENS_VULNDB_URL"] = "off"  # never vuln.go.dev: a test that wants a vulnerability database serves one
    env.update(extra or {})
    return env


@attrs.define
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_daemon(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30,
                 tls: tuple[Path, Path] | None = None, listen: bool = True) -> Daemon:
    """``tls``: (cert, key) to serve https; ``listen=False``: the configuration names the port (ATHENS_PORT)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port() if listen else int((env or {})["ATHENS_PORT"].rsplit(":", 1)[1])
    endpoint = f"tcp:{port}:interface=127.0.0.1"
    if tls:
        endpoint = f"ssl:{port}:interface=127.0.0.1:certKey={tls[0]}:privateKey={tls[1]}"
    log = workdir / "daemon.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "athens", *(["--listen", endpoint] if listen else []),
             *([] if "--workers" in args else ["--workers", "1"]), *args],
            cwd=workdir, env=source_env(env), stdout=out, stderr=subprocess.STDOUT,
        )
    daemon = Daemon(process, port, log, "https" if tls or (env or {}).get("ATHENS_TLSCERT_FILE") else "http")
    context = ssl.create_default_context(cafile=str(tls[0] if tls else (env or {}).get("ATHENS_TLSCERT_FILE"))) \
        if daemon.scheme == "https" else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{daemon.logs()}")
        try:
            with urllib.request.urlopen(daemon.url + "/readyz", timeout=2, context=context) as r:
                if r.status == 200:
                    return daemon
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    daemon.stop()
    raise RuntimeError(f"daemon not ready after {timeout}s:\n{daemon.logs()}")
