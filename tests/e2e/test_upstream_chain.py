"""A chain of two proxies: the downstream fills from the upstream over HTTP (treq), never from git."""

from __future__ import annotations

import time
import pytest

from tests.daemon import start_daemon
from tests.e2e.conftest import CHAIN, MAJOR, PASS, stop_cleanly
from tests.e2e.test_fill import assert_same_hashes, download, fetches, get_no_redirect
from tests.gotool import go_env, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def downstream(filling, daemon, tmp_path_factory):
    """Its only origin is the filling daemon (GOPROXY=<it>); one module passes through, one redirects."""
    work = tmp_path_factory.mktemp("downstream")
    (work / "download.hcl").write_text(f'''
downloadURL = "{daemon.url}"
download "{PASS}" {{
    mode = "passthrough"
    downloadURL = "{filling.url}"
}}
download "{MAJOR}" {{ mode = "redirect" }}
''')
    env = {
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={filling.url}",
        "GO_BINARY_PATH": "/nonexistent/go",  # proof that no go command runs here
        "ATHENS_DOWNLOAD_MODE": f"file:{work / 'download.hcl'}",
        "ATHENS_DOWNLOAD_REDIRECT_CODE": "307",
        # The test modules are "private": not in any checksum database (none is reachable here anyway).
        "ATHENS_GONOSUM_PATTERNS": "github.com/athens-test,github.com/AthensTest",
    }
    d = start_daemon(work, "--storage", "disk", "--storage-root", str(work / "storage"), "--log-level", "debug",
                     env=env)
    yield d
    stop_cleanly(d)


def test_go_downloads_through_a_chain_and_both_cache(tmp_path, downstream, filling, e2e):
    got, _ = download(tmp_path, downstream, f"{CHAIN}@v1.1.0")
    assert_same_hashes(got, e2e)
    for proxy in (downstream, filling):
        stored = proxy.log.parent / "storage" / CHAIN / "v1.1.0" / "source.zip"
        deadline = time.monotonic() + 10  # a zip streamed through is stored right after the client has it
        while not stored.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored.is_file(), proxy.log.parent
    assert fetches(filling, f"{CHAIN}@v1.1.0") == 1  # git, once, at the far end
    assert "running mod download" not in downstream.logs()
    assert "Starting factory" not in downstream.logs()  # no line a new upstream connection


def test_lists_come_from_the_upstream(tmp_path, downstream):
    work = tmp_path / "work"
    work.mkdir()
    env = go_env(work, tmp_path / "modcache", downstream.url)
    (work / "go.mod").write_text("module example.com/e2e\n\ngo 1.21\n")
    assert run(["go", "list", "-m", "-versions", CHAIN], work, env).stdout.strip() == f"{CHAIN} v1.0.0 v1.1.0"
    run(["go", "get", f"{CHAIN}@latest"], work, env)
    assert f"{CHAIN} v1.1.0" in (work / "go.mod").read_text()


def test_passthrough_streams_without_storing(tmp_path, downstream, e2e):
    got, _ = download(tmp_path, downstream, f"{PASS}@v1.0.0")
    assert_same_hashes(got, e2e)
    assert not (downstream.log.parent / "storage" / PASS).exists()


def test_redirect_status_is_configurable(downstream, daemon):
    status, headers = get_no_redirect(f"{downstream.url}/{MAJOR}/@v/v2.0.0.zip")
    assert status == 307 and headers["Location"] == f"{daemon.url}/{MAJOR}/@v/v2.0.0.zip"
