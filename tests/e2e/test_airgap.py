"""
An air-gapped proxy seeded from a developer's module cache serves the go
command's whole workflow: the cache holds only go.mod of much of the module
graph (what MVS read and the build never needed), and those versions must be
served too (hardening item 18).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.daemon import admin_command, source_env, start_daemon
from tests.e2e.conftest import gofile, stop_cleanly
from tests.gotool import go_binary, go_env, make_origins, run

G = "github.com/athens-gap"
DEP, LIBA, LIBB = f"{G}/dep", f"{G}/liba", f"{G}/libb"


def build_graph(root):
    """liba (go 1.16: its graph is not pruned) needs dep v1.0.0, libb needs dep v1.1.0: MVS reads
    dep v1.0.0's go.mod and builds with v1.1.0, so the cache has no zip of dep v1.0.0."""
    origins = make_origins(root)
    dep = origins.repo(DEP)
    for tag in ("v1.0.0", "v1.1.0"):
        origins.commit(dep, {"go.mod": f"module {DEP}\n\ngo 1.16\n", "dep.go": gofile("dep", tag)}, tag)
    liba = origins.repo(LIBA)
    origins.commit(liba, {"go.mod": f"module {LIBA}\n\ngo 1.16\n\nrequire {DEP} v1.0.0\n",
                          "a.go": f'package liba\n\nimport "{DEP}"\n\nfunc A() string {{ return dep.Value() }}\n'}, "v1.0.0")
    libb = origins.repo(LIBB)
    origins.commit(libb, {"go.mod": f"module {LIBB}\n\ngo 1.16\n\nrequire {DEP} v1.1.0\n",
                          "b.go": f'package libb\n\nimport "{DEP}"\n\nfunc B() string {{ return dep.Value() }}\n'}, "v1.0.0")
    app = root / "app"
    app.mkdir()
    (app / "go.mod").write_text(f"module example.com/app\n\ngo 1.21\n\nrequire (\n\t{LIBA} v1.0.0\n\t{LIBB} v1.0.0\n)\n")
    (app / "main.go").write_text(f'package main\n\nimport (\n\t"fmt"\n\n\t"{LIBA}"\n\t"{LIBB}"\n)\n\n'
                                 'func main() { fmt.Println(liba.A(), libb.B()) }\n')
    return origins, app


@pytest.fixture(scope="module")
def airgap(tmp_path_factory):
    go_binary()
    root = tmp_path_factory.mktemp("airgap")
    origins, app = build_graph(root)
    cache = root / "developer-cache"
    env = go_env(root, cache, "direct", origins)
    run(["go", "mod", "tidy"], app, env)
    run(["go", "mod", "download"], app, env)
    vdir = cache / "cache" / "download" / G / "dep" / "@v"
    assert (vdir / "v1.0.0.mod").is_file() and not (vdir / "v1.0.0.zip").exists()  # the case under test
    assert (vdir / "v1.1.0.zip").is_file()

    store = root / "store"
    imported = subprocess.run(
        [*admin_command(), "--storage", "disk", "--storage-root", str(store), "import", str(cache)],
        capture_output=True, text=True, env=source_env(), timeout=300)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    daemon = start_daemon(root / "daemon", "--storage", "disk", "--storage-root", str(store),
                          env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    yield daemon, app, imported.stdout
    stop_cleanly(daemon)


def test_import_stores_the_go_mod_only_versions(airgap):
    daemon, _, report = airgap
    assert "go.mod only 1" in report, report
    assert "incomplete in the cache 0" in report, report
    with urllib.request.urlopen(f"{daemon.url}/{DEP}/@v/v1.0.0.mod", timeout=10) as r:
        assert r.read() == f"module {DEP}\n\ngo 1.16\n".encode()
    with pytest.raises(urllib.error.HTTPError) as missing:  # download mode none: never fetched
        urllib.request.urlopen(f"{daemon.url}/{DEP}/@v/v1.0.0.zip", timeout=10)
    assert missing.value.code == 404
    with urllib.request.urlopen(f"{daemon.url}/{DEP}/@v/list", timeout=10) as r:
        assert r.read() == b"v1.1.0\n"  # only whole versions are offered


def test_the_go_command_works_offline_against_the_seeded_proxy(airgap, tmp_path):
    daemon, app, _ = airgap
    work = tmp_path / "app"
    shutil.copytree(app, work)
    (work / "go.sum").unlink()  # rebuilt from the proxy alone
    env = go_env(tmp_path, tmp_path / "modcache", daemon.url)
    run(["go", "mod", "download"], work, env)
    run(["go", "mod", "tidy"], work, env)
    listed = run(["go", "list", "-m", "all"], work, env).stdout.split("\n")
    assert f"{DEP} v1.1.0" in listed and f"{LIBA} v1.0.0" in listed and f"{LIBB} v1.0.0" in listed
    run(["go", "build", "-o", str(tmp_path / "app-bin"), "."], work, env)
    built = subprocess.run([str(tmp_path / "app-bin")], capture_output=True, text=True, timeout=60)
    assert built.stdout == "v1.1.0 v1.1.0\n"  # dep's Value() is its tag
