"""The systemd units: valid for systemd, hardened, and the socket-activated start really works."""

from __future__ import annotations

import configparser
import os
import shlex
import socket
import subprocess
import time
import urllib.request

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


def test_socket_activation_serves_on_the_inherited_socket(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    command = (f"export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=athens.socket; exec {shlex.quote(twistd())} --nodaemon --pidfile= athens "
               f"--storage memory --listen systemd:domain=INET:index=0")
    # In the child only, the socket becomes descriptor 3, where systemd puts the first one.
    process = subprocess.Popen(["sh", "-c", command], cwd=tmp_path, env=source_env(), pass_fds=(fd, 3),
                               preexec_fn=lambda: os.dup2(fd, 3), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    listener.close()
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.read() == b"OK\n"
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                time.sleep(0.1)
        else:
            raise AssertionError("no answer on the inherited socket")
    finally:
        process.terminate()
        process.wait(30)
