"""Several worker processes on one port: all serve, one that dies is replaced, a stop ends them all."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.daemon import start_daemon
from tests.e2e.conftest import stop_cleanly

pytestmark = pytest.mark.e2e


def pids_serving(url: str, tries: int = 60) -> set[int]:
    def one(_: int) -> int:
        with urllib.request.urlopen(url + "/version", timeout=10) as r:  # a new connection each time
            return int(json.loads(r.read())["pid"])

    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(one, range(tries)))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_two_workers_serve_and_a_dead_one_is_replaced(tmp_path, seeded_root):
    root, _ = seeded_root
    d = start_daemon(tmp_path / "w", "--workers", "2", "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    try:
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while len(pids) < 2 and time.monotonic() < deadline:
            pids |= pids_serving(d.url)
        assert len(pids) == 2 and d.process.pid in pids, pids
        worker = next(p for p in pids if p != d.process.pid)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        replaced: set[int] = set()
        while time.monotonic() < deadline and not (replaced - {d.process.pid, worker}):
            time.sleep(0.5)
            replaced = pids_serving(d.url, 30)
        assert replaced - {d.process.pid, worker}, "the dead worker was not replaced"
        new_worker = next(iter(replaced - {d.process.pid, worker}))
    finally:
        stop_cleanly(d)
    deadline = time.monotonic() + 10
    while alive(new_worker) and time.monotonic() < deadline:  # the stop ended the workers too
        time.sleep(0.05)
    assert not alive(new_worker)
    assert "worker 1 ended" in d.logs() and "restarting it" in d.logs()


def test_metrics_add_up_across_workers(tmp_path, seeded_root):
    root, _ = seeded_root
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    d = start_daemon(tmp_path / "m", "--workers", "2", "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline", "TMPDIR": str(temporary)})
    try:
        pids: set[int] = set()
        asked = 0
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            pids |= pids_serving(d.url, 20)
            asked += 20
        assert len(pids) == 2
        with urllib.request.urlopen(d.url + "/metrics") as r:
            text = r.read().decode()
        version_lines = [line for line in text.splitlines()
                         if line.startswith('athens_requests_total{code="200",endpoint="version"}')]
        assert version_lines, text
        counted = float(version_lines[0].split()[-1])
        # every /version answered, by either process, is in one total
        assert counted == asked, text
        started = [line for line in d.logs().splitlines() if " serving disk storage in " in line]
        assert len(started) == 1, started  # the daemon says it once, not once a worker
        assert str(root) in started[0] and "GOPROXY=direct" in started[0] and "checked against" in started[0]
    finally:
        stop_cleanly(d)
    assert list(temporary.iterdir()) == [], "the metrics directory is removed at a clean stop"


@pytest.mark.parametrize("workers", ["2", "1"])
def test_a_second_daemon_on_the_same_port_fails_to_start(tmp_path, seeded_root, workers):
    """Item 13 of the hardening issue: SO_REUSEPORT must not let a second daemon take a share of the traffic."""
    import subprocess

    from tests.daemon import source_env, twistd

    root, _ = seeded_root
    d = start_daemon(tmp_path / "first", "--workers", "2", "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    try:
        first: set[int] = set()
        deadline = time.monotonic() + 30
        while len(first) < 2 and time.monotonic() < deadline:
            first |= pids_serving(d.url, 20)
        assert len(first) == 2
        (tmp_path / "second").mkdir()
        second = subprocess.run(
            [twistd(), "-n", "--pidfile=", "athens", "--listen", f"tcp:{d.port}:interface=127.0.0.1",
             "--workers", workers, "--storage", "disk", "--storage-root", str(tmp_path / "other")],
            cwd=tmp_path / "second", env=source_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "address already in use" in (second.stdout + second.stderr).lower(), second.stdout + second.stderr
        assert pids_serving(d.url, 40) <= first, "only the first daemon answers"
    finally:
        stop_cleanly(d)


def test_workers_of_a_killed_daemon_stop_by_themselves(tmp_path, seeded_root):
    """kill -9 of the daemon: its workers must not go on serving the port as orphans."""
    root, _ = seeded_root
    d = start_daemon(tmp_path / "k", "--workers", "2", "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        pids |= pids_serving(d.url, 20)
    worker = next(p for p in pids if p != d.process.pid)
    d.process.kill()
    d.process.wait()
    deadline = time.monotonic() + 15
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(worker), "the orphaned worker still runs"
