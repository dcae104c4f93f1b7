"""The systemd units: valid for systemd, hardened, and the socket-activated start really works."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import socket
import subprocess
import time
import urllib.request

import pytest

from athens.tap import Options
from tests.daemon import REPO, source_env, twistd

UNITS = REPO / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read(UNITS / name)
    return parser


def test_units_pass_systemd_analyze_verify(tmp_path):
    # systemd checks that ExecStart exists: point it at this checkout's twistd.
    for name in ("athens.service", "athens.socket"):
        text = (UNITS / name).read_text().replace("/opt/athens-py/bin/twistd", twistd())
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "athens.service"),
                             str(tmp_path / "athens.socket")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "athens" not in result.stderr, result.stderr  # no warning about our units


def test_service_is_sandboxed():
    service = unit("athens.service")["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "User": "athens", "CapabilityBoundingSet": ""}.items():
        assert service.get(key) == value, key
    assert service["Type"] == "exec"  # twistd in the foreground, no sd_notify


def test_exec_start_arguments_are_ours():
    for name, section in (("athens.service", unit("athens.service")["Service"]),
                          ("athens.service.d/socket-activation.conf", unit("athens.service.d/socket-activation.conf")["Service"])):
        argv = shlex.split(section["ExecStart"].strip().splitlines()[-1])
        assert argv[1:4] == ["--nodaemon", "--pidfile=", "athens"], name
        options = Options()
        options.parseOptions(argv[4:])
        assert options["config"] == "/etc/athens/athens.toml"
    assert options["listen"] == "systemd:domain=INET6:index=0"


@pytest.mark.parametrize("storage", [["--storage", "memory"], ["--storage", "disk", "--storage-root", "store"]])
def test_socket_activation_serves_on_the_inherited_socket(tmp_path, storage):
    """Disk storage: the default worker count (one per core), every worker on systemd's one socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    command = (f"export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=athens.socket; exec {shlex.quote(twistd())} --nodaemon --pidfile= athens "
               f"{' '.join(storage)} --listen systemd:domain=INET:index=0")
    # In the child only, the socket becomes descriptor 3, where systemd puts the first one.
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:  # a file, not a pipe nobody reads (a full pipe would stop the daemon)
        process = subprocess.Popen(["sh", "-c", command], cwd=tmp_path, env=source_env(), pass_fds=(fd, 3),
                                   preexec_fn=lambda: os.dup2(fd, 3), stdout=out, stderr=subprocess.STDOUT)
    listener.close()
    expected = 1 if "memory" in storage else max(os.cpu_count() or 1, 1)
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(pids) < expected and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as r:
                    pids.add(json.loads(r.read())["pid"])
            except OSError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
        assert len(pids) == expected, f"processes that answered: {pids}\n{log.read_text()}"
    finally:
        process.terminate()
        process.wait(30)
