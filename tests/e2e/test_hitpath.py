"""The hit path in a running daemon: deletes reach every worker, and memory stays flat under big zips and many clients."""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import socket
import time

import pytest

from athens.module import escape
from tests.daemon import http_status, peak_rss_mib, start_daemon
from tests.e2e.conftest import stop_cleanly
from tests.e2e.test_admin import admin

pytestmark = pytest.mark.e2e
PURE_CACHE = {"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"}


def _status(url: str) -> int:
    return http_status(url, timeout=10)


def _urls(base: str, key: str) -> list[str]:
    module, version = key.split("@")
    return [f"{base}/{escape(module)}/@v/{escape(version)}.{ext}" for ext in ("info", "mod", "zip")]


def test_a_deleted_version_is_served_by_no_worker_within_two_seconds(seeded_root, e2e, tmp_path):
    root, _ = seeded_root
    store = tmp_path / "store"
    shutil.copytree(root, store)
    d = start_daemon(tmp_path / "d", "--workers", "2", "--storage", "disk", "--storage-root", str(store),
                     env=PURE_CACHE)
    try:
        victim, kept = e2e.seeded[0], e2e.seeded[1]
        for _ in range(20):  # a new connection each time: both workers remember every answer
            for url in _urls(d.url, victim) + _urls(d.url, kept):
                assert _status(url) == 200
        admin("--storage", "disk", "--storage-root", str(store), "delete", victim)
        deleted = time.monotonic()
        in_a_row = 0
        while in_a_row < 60:  # 20 rounds of the three files, spread over both workers, all 404
            assert time.monotonic() - deleted < 2.5, "a worker still serves the deleted version"
            in_a_row = in_a_row + 1 if all(_status(u) == 404 for u in _urls(d.url, victim)) else 0
        assert all(_status(u) == 200 for u in _urls(d.url, kept))
    finally:
        stop_cleanly(d)


def _download_all(port: int, path: str, clients: int) -> list[int]:
    """``clients`` connections at once, each reading a whole answer; the bytes each got."""
    selector = selectors.DefaultSelector()
    got = {}
    for i in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, i)
        got[i] = 0
    deadline = time.monotonic() + 120
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            data = key.fileobj.recv(1 << 20)
            if data:
                got[key.data] += len(data)
            else:
                selector.unregister(key.fileobj)
                key.fileobj.close()
    assert not selector.get_map(), "some downloads never ended"
    return list(got.values())


def test_memory_stays_flat_for_a_1_gib_zip_and_1000_clients(seeded_root, e2e, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))  # the daemon inherits it
    root, _ = seeded_root
    store = tmp_path / "store"
    shutil.copytree(root, store)
    big, small = e2e.seeded[0], e2e.seeded[1]
    module, version = big.split("@")
    with open(store / module / version / "source.zip", "r+b") as f:
        f.truncate(1 << 30)  # 1 GiB (sparse): served as stored, never checked again
    d = start_daemon(tmp_path / "d", "--storage", "disk", "--storage-root", str(store), env=PURE_CACHE)
    try:
        big_path, small_path = (u.split(str(d.port), 1)[1] for u in (_urls(d.url, big)[2], _urls(d.url, small)[2]))
        small_size = os.path.getsize(store / small.split("@")[0] / small.split("@")[1] / "source.zip")
        assert _download_all(d.port, small_path, 1)[0] > small_size  # remembered (and the process warmed up)
        start = peak_rss_mib(d.process.pid)
        for _ in range(2):  # the full path once, then the hit path with sendfile
            assert _download_all(d.port, big_path, 1)[0] > 1 << 30
        assert all(n > small_size for n in _download_all(d.port, small_path, 1000))
        grown = peak_rss_mib(d.process.pid) - start
        assert grown < 64, f"peak RSS grew by {grown:.0f} MiB"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        stop_cleanly(d)
