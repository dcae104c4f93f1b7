"""
A real browser (headless Chromium, Debian's ``chromium``) loads the status page of a running daemon
that has filled, hit, failed and missed; the page's text is checked in the browser's DOM, and a
screenshot is kept under the test's tmp dir (its path is printed: ``pytest -s`` shows it).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from tests.daemon import free_port, http_status, start_daemon
from tests.e2e.test_shutdown import wait_until
from tests.servers import _wait_port
from tests.test_stash_and_lists import module_zip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is required for this test (apt-get install chromium; ./run-tests does)")
    return found


def browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Chromium as the machine notes say it works here: headless, no sandbox (root), no background network."""
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args, url]
    return subprocess.run(argv, capture_output=True, timeout=120, check=True)


def publish(root: Path, module: str, version: str, zip_bytes: bytes) -> None:
    """A version in GOPROXY layout, for a plain static file server."""
    where = root / module / "@v"
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{version}.info").write_text(json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}))
    (where / f"{version}.mod").write_text(f"module {module}\n")
    (where / f"{version}.zip").write_bytes(zip_bytes)
    (where / "list").write_text(f"{version}\n")




def test_a_browser_shows_the_status_page_of_a_running_daemon(tmp_path):
    upstream_root = tmp_path / "upstream"
    publish(upstream_root, "example.com/hello", "v1.0.0", module_zip("example.com/hello", "v1.0.0"))
    publish(upstream_root, "example.com/broken", "v1.0.0", module_zip("example.com/broken", "v1.0.0"))
    (upstream_root / "example.com/broken/@v/v1.0.0.info").write_text('{"Version": "v6.6.6"}')  # not what was asked
    port = free_port()
    log = tmp_path / "upstream.log"
    with open(log, "wb") as out:
        upstream = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                     "--directory", str(upstream_root)], stdout=out, stderr=subprocess.STDOUT)
    daemon = None
    try:
        _wait_port(port, upstream, "the upstream", log)
        daemon = start_daemon(tmp_path / "d", "--storage", "disk", "--storage-root", str(tmp_path / "storage"), env={
            "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY=http://127.0.0.1:{port}",
            "ATHENS_GONOSUM_PATTERNS": "example.com",  # (no checksum database here)
        })
        assert http_status(f"{daemon.url}/example.com/hello/@v/v1.0.0.zip") == 200  # a fill (streamed, then stored)
        wait_until((tmp_path / "storage/example.com/hello/v1.0.0/source.zip").is_file, "the fill is stored")
        assert http_status(f"{daemon.url}/example.com/hello/@v/v1.0.0.info") == 200  # a hit
        assert http_status(f"{daemon.url}/example.com/broken/@v/v1.0.0.zip") == 502  # an origin failure
        assert http_status(f"{daemon.url}/example.com/nothing/@v/v1.0.0.zip") == 404  # not found there

        dom = browse(daemon.url + "/", tmp_path / "profile-dom", "--dump-dom").stdout.decode()
        words = " ".join(re.sub(r"<[^>]+>", " ", dom).split())  # what a reader sees
        assert f"export GOPROXY={daemon.url},direct export GONOSUMDB=example.com" in words
        assert re.search(r"1 modules 1 versions \d+ B files under the root Counted \d\.\d s ago", words), words
        assert "25.0% hit ratio (1 hits, 3 misses)" in words, words
        assert "1 versions fetched and stored 1 not found at the origin 1 origin failures" in words, words
        assert re.search(r"example\.com/hello v1\.0\.0 \d+\.\d s ago", words), words

        screenshot = tmp_path / "status.png"
        browse(daemon.url + "/", tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1200,1400",
               "--hide-scrollbars")
        print(f"\nstatus page screenshot: {screenshot}")
        png = screenshot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert (width, height) == (1200, 1400) and len(png) > 20_000  # (a blank page compresses to a few kB)
    finally:
        if daemon is not None:
            daemon.stop()
        upstream.terminate()
        upstream.wait(10)
