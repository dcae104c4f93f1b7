"""
The vulnerability database through the real daemon, the real go command and govulncheck, offline.

A module the tests create (git origin) has a vulnerable v1.0.0 and a fixed
v1.1.0; a database the tests generate says so, served by a test upstream on
loopback.  govulncheck (built by ./run-tests) with ``-db <proxy>/vuln`` finds
the vulnerability in a test program; ``warn`` serves and logs the zip; a dead
upstream leaves the copy in service, across a restart too.  An air-gapped
daemon loads the database with ``athens-admin vulndb import``, and ``deny``
makes the go command fail on the flagged zip only, naming the advisory and
its fix; a newer import reaches the running daemon.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.daemon import REPO, admin_command, source_env, start_daemon
from tests.e2e.conftest import fetcher_env, stop_cleanly
from tests.gotool import download_json, go_binary, go_env, make_origins
from tests.vulndata import entry, tar_of, tree, write_dir

pytestmark = pytest.mark.e2e

LIB = "github.com/athens-vuln/lib"
ADVISORY = entry("GO-2024-0001", LIB, [{"introduced": "0"}, {"fixed": "1.1.0"}], symbols=["Hello"])
LATER = entry("GO-2024-0002", LIB, [{"introduced": "1.1.0"}], symbols=["Hello"], modified="2024-06-01T00:00:00Z")


def govulncheck() -> str:
    path = REPO / ".tools" / "bin" / "govulncheck"
    if not path.exists():
        raise AssertionError(f"{path} is missing: ./run-tests builds it (go install golang.org/x/vuln/cmd/govulncheck)")
    return str(path)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class StaticUpstream:
    """A directory served over loopback: a mirror of vuln.go.dev, as a plain static server would serve it."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    go_binary()
    root = tmp_path_factory.mktemp("vulndb")
    origins = make_origins(root)
    lib = origins.repo(LIB)
    for tag, body in (("v1.0.0", "vulnerable"), ("v1.1.0", "fixed")):
        origins.commit(lib, {"go.mod": f"module {LIB}\n\ngo 1.21\n",
                             "lib.go": f'package lib\n\n// Hello is {body}.\nfunc Hello() string {{ return "{body}" }}\n'},
                       tag)
    app = root / "app"
    app.mkdir()
    (app / "go.mod").write_text(f"module example.com/app\n\ngo 1.21\n\nrequire {LIB} v1.0.0\n")
    (app / "main.go").write_text(f'package main\n\nimport "{LIB}"\n\nfunc main() {{ println(lib.Hello()) }}\n')
    return root, origins, app


def client_env(root: Path, proxy: str, origins) -> dict[str, str]:
    work = root / f"client-{time.monotonic_ns()}"
    work.mkdir()
    return go_env(work, work / "modcache", proxy, origins)


def run_govulncheck(root: Path, app: Path, proxy: str, origins) -> list[dict]:
    result = subprocess.run([govulncheck(), "-db", f"{proxy}/vuln", "-format", "json", "./..."], cwd=app,
                            env=client_env(root, proxy, origins), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return download_json(result.stdout)


def wait_until(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout}s")
        time.sleep(0.2)


def readyz(url: str) -> str:
    with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
        return r.read().decode()


def test_govulncheck_finds_it_through_the_proxy_and_a_dead_upstream_changes_nothing(world):
    root, origins, app = world
    upstream = StaticUpstream(write_dir(tree([ADVISORY]), root / "upstream"))
    env = fetcher_env(origins, {"ATHENS_VULNDB_URL": upstream.url, "ATHENS_VULNDB_REFRESH": "1",
                                "ATHENS_VULN_POLICY": "warn"})
    store = root / "warn-store"
    daemon = start_daemon(root / "warn", "--storage", "disk", "--storage-root", str(store), env=env)
    try:
        wait_until("copied", lambda: "1 entries" in readyz(daemon.url))
        messages = run_govulncheck(root, app, daemon.url, origins)
        config = next(m["config"] for m in messages if "config" in m)
        assert config["db"] == daemon.url + "/vuln" and config["db_last_modified"] == "2024-03-01T00:00:00Z"
        traces = [m["finding"]["trace"] for m in messages if m.get("finding", {}).get("osv") == "GO-2024-0001"]
        assert any(t[0].get("function") == "Hello" and t[0]["version"] == "v1.0.0" for t in traces), messages
        assert f"{LIB}@v1.0.0 has known vulnerabilities: GO-2024-0001 (fixed in v1.1.0); served (VulnPolicy warn)" \
            in daemon.logs()
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as r:
            assert 'athens_vuln_policy_total{action="warn"} 1.0' in r.read().decode()

        upstream.stop()
        wait_until("failing", lambda: "vulnerability database refresh from" in daemon.logs())
        assert "1 entries" in readyz(daemon.url)
        with urllib.request.urlopen(daemon.url + "/vuln/index/db.json", timeout=10) as r:
            assert json.loads(r.read()) == {"modified": "2024-03-01T00:00:00Z"}
    finally:
        stop_cleanly(daemon)
    # Restarted with its upstream still dead: the stored copy is in service.
    daemon = start_daemon(root / "warn-again", "--storage", "disk", "--storage-root", str(store), env=env)
    try:
        wait_until("loaded", lambda: "1 entries" in readyz(daemon.url))
        messages = run_govulncheck(root, app, daemon.url, origins)
        assert any(m.get("finding", {}).get("osv") == "GO-2024-0001" for m in messages)
        print("DEBUGLOG", daemon.logs(), messages[:3])
    finally:
        stop_cleanly(daemon)


def admin(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*admin_command(), "--storage", "disk", "--storage-root", str(store), "vulndb", *args],
                          capture_output=True, text=True, env=source_env(), timeout=120)


def download(root: Path, proxy: str, origins, target: str) -> dict:
    result = subprocess.run(["go", "mod", "download", "-json", target], cwd=root,
                            env=client_env(root, proxy, origins), capture_output=True, text=True, timeout=300)
    (item,) = download_json(result.stdout)
    return item


def test_deny_on_an_air_gapped_proxy_loaded_from_a_file(world):
    root, origins, _ = world
    store = root / "deny-store"
    (root / "db.tar.gz").write_bytes(tar_of(tree([ADVISORY])))
    (root / "broken.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    refused = admin(store, "import", str(root / "broken.zip"))
    assert refused.returncode == 1 and "is not a usable Go vulnerability database" in refused.stdout
    imported = admin(store, "import", str(root / "db.tar.gz"))
    assert imported.returncode == 0 and "imported 1 entries, modified 2024-03-01T00:00:00Z" in imported.stdout, \
        imported.stdout + imported.stderr
    assert "modified 2024-03-01T00:00:00Z" in admin(store, "status").stdout

    env = fetcher_env(origins, {"ATHENS_VULN_POLICY": "deny"})  # VulnDBURL off: no upstream at all
    daemon = start_daemon(root / "deny", "--storage", "disk", "--storage-root", str(store), env=env)
    try:
        wait_until("loaded", lambda: "1 entries" in readyz(daemon.url))
        item = download(root, daemon.url, origins, f"{LIB}@v1.0.0")
        assert "403 Forbidden" in item["Error"], item
        assert f"{LIB}@v1.0.0 has known vulnerabilities: GO-2024-0001 (fixed in v1.1.0)" in item["Error"], item
        assert "GoMod" in item and "Info" in item  # .info and go.mod were served: module graphs resolve
        assert "Error" not in download(root, daemon.url, origins, f"{LIB}@v1.1.0")

        # A newer database loaded while the daemon runs: every process follows the store.
        (root / "newer.zip").write_bytes((write_dir(tree([ADVISORY, LATER]), root / "newer") / "vulndb.zip")
                                         .read_bytes())
        assert admin(store, "import", str(root / "newer.zip")).returncode == 0
        wait_until("following the store", lambda: "2 entries" in readyz(daemon.url), timeout=30)
        later = download(root, daemon.url, origins, f"{LIB}@v1.1.0")
        assert "GO-2024-0002 (no fixed version)" in later.get("Error", ""), later
        assert admin(store, "import", str(root / "db.tar.gz")).returncode == 1  # older than the stored copy
    finally:
        stop_cleanly(daemon)
