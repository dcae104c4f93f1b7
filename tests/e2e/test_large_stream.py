"""A 300 MiB zip streamed through a cold proxy from an upstream: memory stays far below the zip's size."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest

from tests.daemon import free_port, peak_rss_mib, start_daemon
from tests.e2e.conftest import stop_cleanly, wait_for

pytestmark = pytest.mark.e2e

MODULE = "example.com/big"
SIZE_MIB = 300


def build_goproxy_dir(root, size_mib: int = SIZE_MIB) -> str:
    """A GOPROXY directory (as `go` writes one) holding one module zip of ``size_mib``; returns its sha256."""
    vdir = root / MODULE / "@v"
    vdir.mkdir(parents=True)
    (vdir / "list").write_text("v1.0.0\n")
    (vdir / "v1.0.0.info").write_text(json.dumps({"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}))
    (vdir / "v1.0.0.mod").write_text(f"module {MODULE}\n")
    with zipfile.ZipFile(vdir / "v1.0.0.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{MODULE}@v1.0.0/go.mod", f"module {MODULE}\n")
        with zf.open(f"{MODULE}@v1.0.0/data.bin", "w", force_zip64=True) as w:
            block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB
            for i in range(size_mib):
                w.write(block[i % 32 :] + block[: i % 32])
    h = hashlib.sha256()
    with open(vdir / "v1.0.0.zip", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "goproxy"
    digest = build_goproxy_dir(root)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/{MODULE}/@v/list").read()
            break
        except OSError:
            time.sleep(0.1)
    yield url, digest
    server.terminate()
    server.wait()


def test_a_300_mib_zip_streams_through_with_flat_memory(tmp_path, upstream):
    url, digest = upstream
    daemon = start_daemon(tmp_path / "proxy", "--storage", "disk", "--storage-root", str(tmp_path / "storage"), env={
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={url}",
        "ATHENS_GONOSUM_PATTERNS": MODULE,
        "ATHENS_LOG_LEVEL": "warn",
    })
    try:
        before = peak_rss_mib(daemon.process.pid)
        h = hashlib.sha256()
        with urllib.request.urlopen(f"{daemon.url}/{MODULE}/@v/v1.0.0.zip") as r:
            assert int(r.headers["Content-Length"]) > SIZE_MIB << 20
            while chunk := r.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == digest
        wait_for(f"{daemon.url}/{MODULE}/@v/v1.0.0.info")
        stored = tmp_path / "storage" / MODULE / "v1.0.0" / "source.zip"
        for _ in range(300):  # the fill finishes after the client is served
            if stored.exists():
                break
            time.sleep(0.1)
        assert stored.stat().st_size > SIZE_MIB << 20
        peak = peak_rss_mib(daemon.process.pid)
        assert peak < before + 100, f"peak RSS {peak:.0f} MiB (before {before:.0f} MiB) for a {SIZE_MIB} MiB zip"
    finally:
        stop_cleanly(daemon)
