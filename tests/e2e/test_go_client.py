"""The real go command downloads, lists and builds through the real daemon."""

from __future__ import annotations

import json
import time
import subprocess
import urllib.request

import pytest

from tests.e2e.conftest import MAJOR, NOMOD, SIMPLE, UPPER
from tests.gotool import download_json, go_env, run

pytestmark = pytest.mark.e2e


def client(tmp_path, daemon):
    work = tmp_path / "work"
    work.mkdir()
    return work, go_env(work, tmp_path / "modcache", daemon.url)


def test_import_summary(seeded_root, e2e):
    _, result = seeded_root
    # 9 versions with zips; the go command also cached go.mod-only entries for none of them.
    assert "imported 9, go.mod only 0, already stored 0, refused 0, incomplete in the cache 0" in result.stdout


def test_go_mod_download_hashes_match_direct(tmp_path, daemon, e2e):
    work, env = client(tmp_path, daemon)
    wanted = sorted(e2e.seeded)
    items = download_json(run(["go", "mod", "download", "-json", *wanted], work, env).stdout)
    got = {f"{i['Path']}@{i['Version']}": i for i in items}
    assert sorted(got) == wanted
    for key, item in got.items():
        assert "Error" not in item, item
        assert item["Sum"] == e2e.direct[key]["Sum"], key
        assert item["GoModSum"] == e2e.direct[key]["GoModSum"], key
    # the cases the issue names are among them
    for key in (f"{UPPER}@v1.0.0", f"{MAJOR}@v2.1.0", f"{NOMOD}@v1.0.0", f"{SIMPLE}@{e2e.pseudo}"):
        assert key in got


def test_go_list_versions(tmp_path, daemon):
    work, env = client(tmp_path, daemon)
    (work / "go.mod").write_text("module example.com/e2e\n\ngo 1.21\n")
    out = run(["go", "list", "-m", "-versions", SIMPLE, MAJOR], work, env).stdout.splitlines()
    assert out == [f"{SIMPLE} v1.0.0 v1.1.0 v1.2.0 v1.3.0-rc.1", f"{MAJOR} v2.0.0 v2.1.0"]


def test_go_build_a_program_with_cached_modules(tmp_path, daemon):
    work, env = client(tmp_path, daemon)
    (work / "go.mod").write_text(
        "module example.com/app\n\ngo 1.21\n\n"
        f"require (\n\t{SIMPLE} v1.2.0\n\t{UPPER} v1.0.0\n\t{MAJOR} v2.1.0\n\t{NOMOD} v1.0.0\n)\n"
    )
    (work / "main.go").write_text(
        "package main\n\nimport (\n\t\"fmt\"\n\n"
        f'\t"{SIMPLE}"\n\t"{UPPER}"\n\t"{MAJOR}"\n\t"{NOMOD}"\n)\n\n'
        "func main() { fmt.Println(simple.Hello(), upper.Shout(), major.Version(), nomod.Old()) }\n"
    )
    run(["go", "build", "-o", "app", "."], work, env)
    output = subprocess.run([str(work / "app")], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "simple v1.2.0 UPPER v2.1.0 no go.mod"


def test_go_get_latest_picks_the_newest_release(tmp_path, daemon):
    work, env = client(tmp_path, daemon)
    (work / "go.mod").write_text("module example.com/e2e\n\ngo 1.21\n")
    run(["go", "get", f"{SIMPLE}@latest"], work, env)
    assert f"{SIMPLE} v1.2.0" in (work / "go.mod").read_text()


def test_a_module_not_in_the_cache_is_a_clear_404(tmp_path, daemon):
    work, env = client(tmp_path, daemon)
    result = subprocess.run(["go", "mod", "download", "-json", "github.com/athens-test/missing@v1.0.0"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "404 Not Found" in result.stdout + result.stderr
    assert "not in the cache" in result.stdout + result.stderr or "not found" in result.stdout + result.stderr


def test_http_headers_over_a_real_connection(daemon, e2e):
    base = f"{daemon.url}/github.com/!athens!test/!upper/@v/v1.0.0"
    with urllib.request.urlopen(base + ".zip") as r:
        data = r.read()
        assert r.headers["Content-Type"] == "application/zip"
        assert int(r.headers["Content-Length"]) == len(data) > 0
        assert r.headers.get("Transfer-Encoding") is None
    with urllib.request.urlopen(urllib.request.Request(base + ".zip", method="HEAD")) as r:
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.read() == b""
    with urllib.request.urlopen(base + ".info") as r:
        assert r.headers["Content-Type"] == "application/json"
        assert json.loads(r.read())["Version"] == "v1.0.0"
    with urllib.request.urlopen(f"{daemon.url}/version") as r:
        assert json.loads(r.read())["storage"] == "disk"


def test_access_log_has_the_requests(daemon, e2e):
    with urllib.request.urlopen(f"{daemon.url}/healthz") as r:
        assert r.status == 200
    deadline = time.monotonic() + 10  # lines are written in batches, every 0.1 s
    while '"GET /healthz" 200' not in daemon.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"GET /healthz" 200' in daemon.logs()


def test_tls_from_the_configuration_with_basic_auth(tmp_path, seeded_root, e2e):
    from tests.daemon import free_port, start_daemon
    from tests.e2e.conftest import stop_cleanly
    from tests.tls import make_certificate

    cert, key = make_certificate(tmp_path / "tls")
    root, _ = seeded_root
    d = start_daemon(tmp_path / "tlsd", "--storage", "disk", "--storage-root", str(root), listen=False, env={
        "ATHENS_PORT": f"127.0.0.1:{free_port()}", "ATHENS_TLSCERT_FILE": str(cert), "ATHENS_TLSKEY_FILE": str(key),
        "ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline",
        "BASIC_AUTH_USER": "builder", "BASIC_AUTH_PASS": "s3cret-pass"})
    try:
        work, env = client(tmp_path, d)
        env["SSL_CERT_FILE"] = str(cert)  # the go command trusts the test certificate
        target = f"{UPPER}@v1.0.0"
        refused = subprocess.run(["go", "mod", "download", "-json", target], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
        env["GOPROXY"] = d.url.replace("https://", "https://builder:s3cret-pass@")
        got = download_json(run(["go", "mod", "download", "-json", target], work, env).stdout)
        assert got[0]["Sum"] == e2e.direct[target]["Sum"]
    finally:
        stop_cleanly(d)
    assert "s3cret-pass" not in d.logs()


def test_index_lists_every_stored_version_and_index_type_none_nothing(tmp_path, daemon, seeded_root, e2e):
    """Athens' /index from the daemon over a real store; IndexType = "none" (Athens' default) answers nothing."""
    from datetime import datetime

    from tests.daemon import start_daemon
    from tests.e2e.conftest import stop_cleanly

    with urllib.request.urlopen(f"{daemon.url}/index?limit=100", timeout=10) as r:
        lines = [json.loads(line) for line in r.read().splitlines()]
    assert sorted(f"{i['Path']}@{i['Version']}" for i in lines) == sorted(e2e.seeded)
    assert all(i["Timestamp"].endswith("Z") for i in lines)
    times = [datetime.fromisoformat(i["Timestamp"].replace("Z", "+00:00")) for i in lines]
    assert times == sorted(times)
    root, _ = seeded_root
    off = start_daemon(tmp_path / "off", "--storage", "disk", "--storage-root", str(root),
                       env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline",
                            "ATHENS_INDEX_TYPE": "none"})
    try:
        with urllib.request.urlopen(f"{off.url}/index", timeout=10) as r:
            assert (r.status, r.read()) == (200, b"")
    finally:
        stop_cleanly(off)
