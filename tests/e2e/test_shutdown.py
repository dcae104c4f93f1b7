"""A stop (SIGTERM) while a request is in flight: it completes, then the daemon exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.daemon import free_port, start_daemon
from tests.e2e.conftest import stop_cleanly

pytestmark = pytest.mark.e2e


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False

SLOW_UPSTREAM = r'''
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith(".info"):
            open(sys.argv[3], "w").close()  # the test waits for this: the request is in flight
            time.sleep(2)  # a slow origin: the request is in flight when the stop comes
            body = json.dumps({"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}).encode()
        elif self.path.endswith(".mod"):
            body = b"module example.com/slow\n"
        elif self.path.endswith(".zip"):
            body = open(sys.argv[2], "rb").read()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def test_a_stop_lets_the_request_in_flight_finish(tmp_path):
    from tests.test_stash_and_lists import module_zip

    zip_path = tmp_path / "m.zip"
    zip_path.write_bytes(module_zip("example.com/slow", "v1.0.0"))
    port = free_port()
    asked = tmp_path / "asked"
    upstream = subprocess.Popen([sys.executable, "-c", SLOW_UPSTREAM, str(port), str(zip_path), str(asked)])
    wait_until(lambda: _listening(port), "the slow upstream listens")
    daemon = start_daemon(tmp_path / "d", "--storage", "disk", "--storage-root", str(tmp_path / "storage"), env={
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY=http://127.0.0.1:{port}", "ATHENS_GONOSUM_PATTERNS": "example.com",
        "ATHENS_SHUTDOWN_TIMEOUT": "30"})
    try:
        answers: list[tuple[int, bytes]] = []

        def ask() -> None:
            with urllib.request.urlopen(f"{daemon.url}/example.com/slow/@v/v1.0.0.zip", timeout=60) as r:
                answers.append((r.status, r.read()))

        client = threading.Thread(target=ask)
        client.start()
        wait_until(asked.exists, "the request reached the slow origin")
        daemon.process.send_signal(signal.SIGTERM)
        client.join(60)
        assert answers and answers[0] == (200, zip_path.read_bytes())
        daemon.process.wait(60)
        assert "draining 1 requests in flight" in daemon.logs()
        assert (tmp_path / "storage" / "example.com" / "slow" / "v1.0.0" / "source.zip").is_file()
        assert list((tmp_path / "storage" / ".athens-tmp").iterdir()) == []
    finally:
        stop_cleanly(daemon)
        upstream.terminate()
        upstream.wait(10)
