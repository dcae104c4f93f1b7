"""A cold cache filled from git origins through the go command, in every download mode."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import (
    ASYNC,
    BLOCKED,
    CONCURRENT,
    EXCLUDED,
    INCOMPAT,
    MAJOR,
    MONO_SUB,
    MUTABLE,
    NOMOD,
    O,
    RETRACT,
    SIMPLE,
    SUBV2,
    UPPER,
    wait_for,
)
from tests.gotool import UNREACHABLE_OWNER, download_json, go_env, run

pytestmark = pytest.mark.e2e


def client(tmp_path, proxy):
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return work, go_env(work, tmp_path / "modcache", proxy.url)


def download(tmp_path, proxy, *targets, check=True):
    work, env = client(tmp_path, proxy)
    result = subprocess.run(["go", "mod", "download", "-json", *targets], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return {f"{i['Path']}@{i['Version']}": i for i in download_json(result.stdout)}, result


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get_no_redirect(url: str):
    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=60) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def fetches(daemon, what: str) -> int:
    """How many times the daemon ran `go mod download` for ``what`` (from its debug log)."""
    return daemon.logs().count(f"mod download -json {what}\n") + daemon.logs().count(f"mod download -json {what} ")


def assert_same_hashes(got: dict, e2e) -> None:
    for key, item in got.items():
        assert "Error" not in item, item
        assert item["Sum"] == e2e.direct[key]["Sum"], key
        assert item["GoModSum"] == e2e.direct[key]["GoModSum"], key


def test_sync_cold_download_matches_direct(tmp_path, filling, e2e):
    targets = [f"{SIMPLE}@v1.1.0", f"{UPPER}@v1.0.0", f"{INCOMPAT}@v2.0.0+incompatible", f"{SUBV2}@v2.0.0",
               f"{MONO_SUB}@v1.1.0", f"{RETRACT}@v1.1.0"]
    got, _ = download(tmp_path, filling, *targets)
    assert sorted(got) == sorted(targets)
    assert_same_hashes(got, e2e)
    # now stored: a second client is served from the cache, no new fetch
    before = fetches(filling, f"{UPPER}@v1.0.0")
    got, _ = download(tmp_path / "again", filling, f"{UPPER}@v1.0.0")
    assert_same_hashes(got, e2e)
    assert fetches(filling, f"{UPPER}@v1.0.0") == before == 1


def test_go_get_a_branch_resolves_to_the_pseudo_version(tmp_path, filling, e2e):
    work, env = client(tmp_path, filling)
    (work / "go.mod").write_text("module example.com/app\n\ngo 1.21\n")
    run(["go", "get", f"{SIMPLE}@main"], work, env)
    assert f"{SIMPLE} {e2e.pseudo}" in (work / "go.mod").read_text()
    status, body, _ = get(f"{filling.url}/{SIMPLE}/@v/{e2e.head[:7]}.info")
    assert status == 200 and json.loads(body)["Version"] == e2e.pseudo


def test_lists_through_the_origin(tmp_path, filling):
    work, env = client(tmp_path, filling)
    (work / "go.mod").write_text("module example.com/e2e\n\ngo 1.21\n")
    out = run(["go", "list", "-m", "-versions", SIMPLE, INCOMPAT, SUBV2, f"{O}/subv2", MONO_SUB, NOMOD, UPPER, MAJOR,
               RETRACT], work, env).stdout.splitlines()
    assert out == [
        f"{SIMPLE} v1.0.0 v1.1.0 v1.2.0 v1.3.0-rc.1",
        f"{INCOMPAT} v1.0.0 v2.0.0+incompatible v3.1.0+incompatible",
        f"{SUBV2} v2.0.0",
        f"{O}/subv2 v1.0.0",
        f"{MONO_SUB} v1.0.0 v1.1.0",
        f"{NOMOD} v1.0.0",
        f"{UPPER} v1.0.0",
        f"{MAJOR} v2.0.0 v2.1.0",
        f"{RETRACT} v1.1.0",  # the client hides the retracted v1.0.0 itself...
    ]
    status, body, headers = get(f"{filling.url}/{RETRACT}/@v/list")
    assert (status, body) == (200, b"v1.0.0\nv1.1.0\n")  # ...because the proxy keeps it in the list
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_latest_through_the_origin(filling):
    status, body, _ = get(f"{filling.url}/{SIMPLE}/@latest")
    assert status == 200 and json.loads(body)["Version"] == "v1.2.0"


def test_a_list_is_answered_from_the_list_cache(filling):
    module = f"{O}/mono/sub"
    for _ in range(5):
        assert get(f"{filling.url}/{module}/@v/list")[0] == 200
    assert filling.logs().count(f"list -m -versions -retracted -json {module}@latest") == 1


def test_unknown_modules_are_404_fast_and_cached(filling):
    for _ in range(3):
        status, body, headers = get(f"{filling.url}/{O}/no-such-repo/@v/list")
        assert status == 404, body
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert b"not found" in body
    assert filling.logs().count(f"{O}/no-such-repo@latest") == 1
    status, body, _ = get(f"{filling.url}/{O}/no-such-repo/@v/v1.0.0.info")
    assert status == 404 and b"does not appear to be a git repository" in body


def test_an_unreachable_origin_is_502(filling):
    status, body, _ = get(f"{filling.url}/{UNREACHABLE_OWNER}/x/@v/v1.0.0.zip")
    assert status == 502, body
    assert b"origin failed" in body and b"Traceback" not in body
    assert get(f"{filling.url}/{UNREACHABLE_OWNER}/x/@v/v1.0.0.info")[0] == 502


def test_async_answers_404_then_fills_in_the_background(tmp_path, filling, e2e):
    _, result = download(tmp_path, filling, f"{ASYNC}@v1.0.0", check=False)
    assert result.returncode != 0 and "404" in result.stdout + result.stderr
    wait_for(f"{filling.url}/{ASYNC}/@v/v1.0.0.zip")
    got, _ = download(tmp_path / "second", filling, f"{ASYNC}@v1.0.0")
    assert_same_hashes(got, e2e)


def test_redirect_sends_the_client_to_the_download_url(tmp_path, filling, daemon, e2e):
    status, headers = get_no_redirect(f"{filling.url}/{MAJOR}/@v/v2.1.0.zip")
    assert status == 301 and headers["Location"] == f"{daemon.url}/{MAJOR}/@v/v2.1.0.zip"
    got, _ = download(tmp_path, filling, f"{MAJOR}@v2.1.0")
    assert_same_hashes(got, e2e)
    assert fetches(filling, f"{MAJOR}@v2.1.0") == 0


def test_async_redirect_redirects_and_fills(tmp_path, filling, daemon, e2e):
    got, _ = download(tmp_path, filling, f"{NOMOD}@v1.0.0")  # served by the download URL
    assert_same_hashes(got, e2e)
    # ...and this proxy filled its own cache meanwhile: its storage now answers without a redirect
    wait_for(f"{filling.url}/{NOMOD}/@v/v1.0.0.mod")
    status, headers = get_no_redirect(f"{filling.url}/{NOMOD}/@v/v1.0.0.zip")
    assert status == 200


def test_none_is_404(tmp_path, filling):
    _, result = download(tmp_path, filling, f"{BLOCKED}@v1.0.0", check=False)
    assert result.returncode != 0
    assert "not in the cache" in result.stdout + result.stderr
    assert fetches(filling, f"{BLOCKED}@v1.0.0") == 0


def test_filter_file_excludes_and_sends_direct(filling, daemon):
    status, body, _ = get(f"{filling.url}/{EXCLUDED}/@v/v1.0.0.info")
    assert status == 403 and b"excluded by the filter" in body
    status, body, _ = get(f"{filling.url}/{SIMPLE}/@v/v1.0.0.zip")  # version qualifier v1.0
    assert status == 403
    assert get(f"{filling.url}/{SIMPLE}/@v/v1.2.0.info")[0] == 200
    status, headers = get_no_redirect(f"{filling.url}/{O}/direct/@v/list")
    assert status == 301 and headers["Location"] == f"{daemon.url}/{O}/direct/@v/list"


def test_fifty_concurrent_misses_cause_one_fetch(filling, e2e):
    url = f"{filling.url}/{CONCURRENT}/@v/v1.0.0.zip"
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: get(url), range(50)))
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, body, _ in results}) == 1
    assert fetches(filling, f"{CONCURRENT}@v1.0.0") == 1


def test_a_moved_tag_does_not_change_what_is_served(tmp_path, filling, e2e):
    got, _ = download(tmp_path, filling, f"{MUTABLE}@v1.0.0")
    assert_same_hashes(got, e2e)
    repo = e2e.origins.repos[MUTABLE]
    e2e.origins.commit(repo, {"m.go": "package m\n\n// rewritten history\n"})
    e2e.origins.tag(repo, "v1.0.0")
    got, _ = download(tmp_path / "after", filling, f"{MUTABLE}@v1.0.0")
    assert_same_hashes(got, e2e)


def test_a_failed_fetch_stores_nothing_and_leaves_no_temporary_directory(filling):
    assert get(f"{filling.url}/{O}/no-such-repo-either/@v/v1.0.0.zip")[0] == 404
    assert get(f"{filling.url}/{UNREACHABLE_OWNER}/y/@v/v1.0.0.zip")[0] == 502
    storage = filling.log.parent / "storage"
    assert not (storage / "github.com" / "athens-test" / "no-such-repo-either").exists()
    assert not (storage / UNREACHABLE_OWNER).exists()
    # (the shelf of Go toolchains the go command switched to is kept there on purpose: athens/fetch/toolchains.py)
    assert [p for p in (filling.log.parent / "goget").iterdir() if p.name != "athens-toolchains"] == []
