"""
Warming the store for CI from a go.sum the real go command wrote: ``athens-admin prefetch`` over git
origins (the go command fills it), and ``POST /admin/prefetch`` on a daemon whose origin is an
upstream proxy (go.mod-only versions stored as such). A build then needs nothing else.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import attrs
import pytest

from tests.daemon import admin_command, source_env, start_daemon
from tests.e2e.conftest import fetcher_env, stop_cleanly
from tests.gotool import Origins, go_env, make_origins, run

pytestmark = pytest.mark.e2e

A, B = "github.com/pf/a", "github.com/pf/b"


@attrs.frozen
class Project:
    origins: Origins
    main: Path
    go_sum: str


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """b v1.0.0 and v1.1.0; a v1.0.0 needs b v1.0.0 (at go 1.16: its graph is not pruned); main needs a and b v1.1.0."""
    root = tmp_path_factory.mktemp("prefetch")
    origins = make_origins(root)
    b = origins.repo(B)
    origins.commit(b, {"go.mod": f"module {B}\n\ngo 1.21\n", "b.go": "package b\n\nconst V = 1\n"}, "v1.0.0")
    origins.commit(b, {"b.go": "package b\n\nconst V = 2\n"}, "v1.1.0")
    a = origins.repo(A)
    origins.commit(a, {"go.mod": f"module {A}\n\ngo 1.16\n\nrequire {B} v1.0.0\n",
                       "a.go": f'package a\n\nimport "{B}"\n\nconst V = b.V\n'}, "v1.0.0")
    main = root / "main"
    main.mkdir()
    (main / "go.mod").write_text(f"module example.com/main\n\ngo 1.21\n\nrequire (\n\t{A} v1.0.0\n\t{B} v1.1.0\n)\n")
    (main / "main.go").write_text(f'package main\n\nimport (\n\t"fmt"\n\n\t"{A}"\n\t"{B}"\n)\n\n'
                                  'func main() { fmt.Println(a.V, b.V) }\n')
    run(["go", "mod", "tidy"], main, go_env(main, root / "tidy-cache", "direct", origins))
    go_sum = (main / "go.sum").read_text()
    assert f"{B} v1.0.0/go.mod " in go_sum and f"{B} v1.0.0 " not in go_sum  # a go.mod-only line
    return Project(origins, main, go_sum)


def prefetch(project: Project, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*admin_command(), "--storage", "disk", "--storage-root", str(root), "prefetch", *args],
                          capture_output=True, text=True, timeout=300,
                          env=source_env(fetcher_env(project.origins)), cwd=project.main)


def load_offline(project: Project, root: Path, tmp_path: Path) -> list[str]:
    """
    Every package a build of main compiles, loaded (``go list -deps``: the module versions ``go build``
    needs, without compiling the standard library) in a fresh module cache, through a daemon that only
    serves what the store holds.
    """
    d = start_daemon(tmp_path / "offline", "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    try:
        env = go_env(project.main, tmp_path / "build-cache", d.url)
        env["GOFLAGS"] = "-mod=readonly"
        listed = run(["go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}@{{.Version}}{{end}}", "."],
                     project.main, env).stdout.split()
        return sorted(set(listed))
    finally:
        stop_cleanly(d)


def test_prefetch_from_go_sum_fills_what_a_build_needs(project, tmp_path):
    (tmp_path / "offline").mkdir()
    root = tmp_path / "storage"
    result = prefetch(project, root, "go.sum")
    assert result.returncode == 0, result.stdout + result.stderr
    # The go command hands out whole versions only: b v1.0.0 (go.mod-only in go.sum) is stored whole.
    assert result.stdout.splitlines()[0] == ("3 versions: 3 stored, 0 stored go.mod-only, 0 already there, "
                                             "0 skipped, 0 failed")
    assert "100%" in result.stderr  # progress, as plain lines when not on a terminal
    for module, version in ((A, "v1.0.0"), (B, "v1.0.0"), (B, "v1.1.0")):
        assert (root / module / version / "source.zip").is_file()
    assert load_offline(project, root, tmp_path) == ["example.com/main@", f"{A}@v1.0.0", f"{B}@v1.1.0"]

    again = prefetch(project, root, "go.sum", "go.mod")  # go.mod names the same versions
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("3 versions: 0 stored, 0 stored go.mod-only, 3 already there")


def test_a_version_that_cannot_be_had_fails_the_prefetch(project, tmp_path):
    listing = tmp_path / "modules.txt"
    listing.write_text(f"{A} v1.0.0\n{B}@v1.9.9\nnot a module line at all\n")
    result = prefetch(project, tmp_path / "storage", str(listing))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].endswith("1 stored, 0 stored go.mod-only, 0 already there, 0 skipped, 2 failed")
    assert f"failed {B}@v1.9.9: " in result.stdout
    assert f"unreadable {listing}:3: not 'path version'" in result.stdout


def test_a_go_sum_that_disagrees_with_the_origin_fails(project, tmp_path):
    lines = [line.replace(" h1:", " h1:AAAA") if line.startswith(f"{A} v1.0.0 ") else line
             for line in project.go_sum.splitlines()]
    (tmp_path / "go.sum").write_text("\n".join(lines) + "\n")
    result = prefetch(project, tmp_path / "storage", str(tmp_path / "go.sum"))
    assert result.returncode == 1
    assert f"failed {A}@v1.0.0: the stored zip is h1:" in result.stdout and ", go.sum says h1:AAAA" in result.stdout


@pytest.fixture(scope="module")
def endpoint_daemons(project, tmp_path_factory):
    """An upstream daemon filling from git, and one in front of it with the prefetch endpoint."""
    work = tmp_path_factory.mktemp("prefetch-endpoint")
    upstream = start_daemon(work / "upstream", "--storage", "disk", "--storage-root", str(work / "upstream-store"),
                            env=fetcher_env(project.origins))
    front = None
    try:
        front = start_daemon(work / "front", "--storage", "disk", "--storage-root", str(work / "front-store"), env={
            "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream.url}", "GO_BINARY_PATH": "/nonexistent/go",
            "ATHENS_GONOSUM_PATTERNS": "github.com/pf", "ATHENS_PREFETCH_ENDPOINT": "true",
            "BASIC_AUTH_USER": "ci", "BASIC_AUTH_PASS": "warm-it"})
        yield upstream, front, work / "front-store"
    finally:
        for d in (front, upstream):
            if d is not None:
                stop_cleanly(d)


def post(url: str, data: bytes, auth: str | None):
    request = urllib.request.Request(url, data, method="POST")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_prefetch_endpoint_stores_go_mod_only_versions_from_an_upstream(project, endpoint_daemons):
    upstream, front, store = endpoint_daemons
    assert post(f"{front.url}/admin/prefetch", project.go_sum.encode(), None)[0] == 401
    status, answer = post(f"{front.url}/admin/prefetch?jobs=2", project.go_sum.encode(), "ci:warm-it")
    assert status == 200, answer
    report = json.loads(answer)
    assert (report["versions"], report["stored"], report["mod_only"], report["failed"]) == (3, 2, 1, 0)
    assert (store / B / "v1.0.0" / "go.mod").is_file() and not (store / B / "v1.0.0" / "source.zip").exists()
    assert (store / A / "v1.0.0" / "source.zip").is_file() and (store / B / "v1.1.0" / "source.zip").is_file()
    status, answer = post(f"{front.url}/admin/prefetch", f"{B} v1.9.9\n".encode(), "ci:warm-it")
    assert status == 502 and json.loads(answer)["failures"][0]["version"] == "v1.9.9"
    assert post(f"{front.url}/admin/prefetch", b"\xff\xfe", "ci:warm-it")[0] == 400


def test_the_endpoint_is_off_by_default_and_never_without_credentials(tmp_path, project):
    from athens.config import ConfigError, load
    from athens.service import prefetch_endpoint

    with pytest.raises(ConfigError, match="PrefetchEndpoint: needs BasicAuthUser"):
        prefetch_endpoint(load(None, environ={"ATHENS_PREFETCH_ENDPOINT": "true"}))
    d = start_daemon(tmp_path, "--storage", "memory")
    try:
        assert post(f"{d.url}/admin/prefetch", project.go_sum.encode(), None)[0] == 405
    finally:
        stop_cleanly(d)
