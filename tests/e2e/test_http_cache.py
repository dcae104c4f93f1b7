"""
A caching nginx in front of the daemon (what a CDN does) serves repeats
without reaching it, to the real go command; curl sees the validators,
conditional answers and ranges a resuming download needs.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
import urllib.request

import pytest

from tests.e2e.conftest import SIMPLE, UPPER
from tests.gotool import download_json, go_env, run
from tests.servers import start_caching_nginx

pytestmark = pytest.mark.e2e

VERSIONS = [f"{SIMPLE}@v1.2.0", f"{UPPER}@v1.0.0"]


@pytest.fixture(scope="module")
def nginx(daemon, tmp_path_factory):
    server = start_caching_nginx(tmp_path_factory.mktemp("nginx"), daemon.port)
    yield server
    server.stop()


def logged_so_far(daemon) -> int:
    """
    The length of the daemon's log once everything it answered until now is
    in it: access lines come in batches, so ask for a marker and wait for it.
    """
    marker = uuid.uuid4().hex
    urllib.request.urlopen(f"{daemon.url}/healthz?{marker}", timeout=10).read()
    deadline = time.monotonic() + 30
    while marker not in (text := daemon.logs()):
        assert time.monotonic() < deadline, "the daemon never logged the marker request"
        time.sleep(0.05)
    return text.index(marker)


def protocol_requests(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r'"(GET|HEAD) /[^"]*/@(v|latest)', line)]


def test_repeats_are_served_by_the_cache_in_front_without_reaching_the_proxy(tmp_path, daemon, nginx, e2e):
    sums = []
    for attempt in ("cold", "warm"):
        work = tmp_path / attempt
        work.mkdir()
        env = go_env(work, tmp_path / f"modcache-{attempt}", nginx.url)  # an empty module cache each time
        if attempt == "warm":
            before = logged_so_far(daemon)
        items = download_json(run(["go", "mod", "download", "-json", *VERSIONS], work, env).stdout)
        sums.append({f"{i['Path']}@{i['Version']}": (i["Sum"], i["GoModSum"]) for i in items})
        (work / "go.mod").write_text("module example.com/behind\n\ngo 1.21\n")
        listed = run(["go", "list", "-m", "-versions", SIMPLE], work, env).stdout.split()
        assert listed == [SIMPLE, "v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0-rc.1"]
    assert sums[0] == sums[1] == {k: (e2e.direct[k]["Sum"], e2e.direct[k]["GoModSum"]) for k in VERSIONS}
    # A list is fresh for ListCacheTTL (60 s): on a machine slow enough to pass that, nginx revalidates it (304).
    lines = [line for line in daemon.logs()[before:logged_so_far(daemon)].splitlines() if '/@v/list"' not in line]
    assert protocol_requests(lines) == [], "the proxy saw none of the warm run's versions"
    served = [line for line in nginx.access_lines() if "/@v/" in line[1]]
    kinds = sorted(line[1].rsplit(".", 1)[-1] if "/@v/v" in line[1] else "list" for line in served)
    assert kinds == sorted(["info", "mod", "zip"] * 4 + ["list"] * 2)
    cold, warm = served[: len(served) // 2], served[len(served) // 2:]
    assert [line[3] for line in cold] == ["MISS"] * len(cold)
    assert [(line[2], line[3], line[4]) for line in warm if not line[1].endswith("/list")] == [("200", "HIT", "-")] * 6


def curl(*args: str) -> tuple[dict[str, str], bytes, str]:
    """Status line and headers (lower-case names) of the last answer, and the body."""
    result = subprocess.run(["curl", "-sS", "-D", "-", "-o", "-", *args], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return headers, body, lines[0]


def test_curl_sees_validators_conditional_answers_and_ranges(tmp_path, daemon, nginx, e2e):
    url = f"{daemon.url}/{SIMPLE}/@v/v1.2.0.zip"
    headers, whole, status = curl(url)
    assert status.endswith("200 OK")
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["accept-ranges"] == "bytes" and headers["last-modified"].endswith(" GMT")
    etag = headers["etag"]
    assert len(whole) == int(headers["content-length"]) > 200
    _, body, status = curl("-H", f"If-None-Match: {etag}", url)
    assert status.endswith("304 Not Modified") and body == b""
    _, body, status = curl("-H", f"If-Modified-Since: {headers['last-modified']}", url)
    assert status.endswith("304 Not Modified")
    ranged, body, status = curl("--range", "100-199", url)
    assert status.endswith("206 Partial Content") and body == whole[100:200]
    assert ranged["content-range"] == f"bytes 100-199/{len(whole)}"
    # A download that broke off half way resumes where it stopped (curl -C - asks for the rest with Range).
    partial = tmp_path / "partial.zip"
    partial.write_bytes(whole[: len(whole) // 2])
    subprocess.run(["curl", "-sS", "-C", "-", "-o", str(partial), url], check=True, timeout=60)
    assert partial.read_bytes() == whole
    # Through nginx: the same answer, from nginx's cache once it has it.
    curl(f"{nginx.url}/{SIMPLE}/@v/v1.2.0.zip")
    cached, body, _ = curl(f"{nginx.url}/{SIMPLE}/@v/v1.2.0.zip")
    assert (cached["x-cache-status"], cached["etag"], body) == ("HIT", etag, whole)
    missing, _, status = curl(f"{nginx.url}/github.com/athens-test/missing/@v/v1.0.0.info")
    assert status.split()[1] == "404" and missing["cache-control"] == "public, max-age=60"
