"""
Session fixtures for the end-to-end tests: origins, a module cache the go
command filled directly from them, a disk store seeded from it with
`athens-admin import`, and the real daemon serving that store.
"""

from __future__ import annotations

import signal
import subprocess

import attrs
import pytest

from tests.daemon import admin_command, source_env, start_daemon
from tests.gotool import Origins, download_json, go_binary, go_env, make_origins, run


@attrs.frozen
class Fixtures:
    origins: Origins
    #: module@version -> the JSON `go mod download -json` printed for the direct download.
    direct: dict[str, dict]
    pseudo: str  # the pseudo-version `simple@<commit>` resolved to
    direct_cache: object


SIMPLE = "github.com/athens-test/simple"
UPPER = "github.com/AthensTest/Upper"
MAJOR = "github.com/athens-test/major/v2"
NOMOD = "github.com/athens-test/nomod"


def build_origins(root) -> tuple[Origins, str]:
    origins = make_origins(root)
    simple = origins.repo(SIMPLE)
    for i, tag in enumerate(["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0-rc.1"]):
        origins.commit(simple, {
            "go.mod": f"module {SIMPLE}\n\ngo 1.21\n",
            "simple.go": f'package simple\n\n// Hello says which version this is.\nfunc Hello() string {{ return "simple {tag}" }}\n',
            "LICENSE": "MIT\n",
        }, tag)
    head = origins.commit(simple, {"extra.go": "package simple\n\nconst Extra = 1\n"})

    upper = origins.repo(UPPER)
    origins.commit(upper, {
        "go.mod": f"module {UPPER}\n\ngo 1.21\n",
        "upper.go": 'package upper\n\nfunc Shout() string { return "UPPER" }\n',
    }, "v1.0.0")

    major = origins.repo("github.com/athens-test/major")
    for tag in ("v2.0.0", "v2.1.0"):
        origins.commit(major, {
            "go.mod": f"module {MAJOR}\n\ngo 1.21\n",
            "major.go": f'package major\n\nfunc Version() string {{ return "{tag}" }}\n',
        }, tag)

    nomod = origins.repo(NOMOD)
    origins.commit(nomod, {"nomod.go": 'package nomod\n\nfunc Old() string { return "no go.mod" }\n'}, "v1.0.0")
    return origins, head


@pytest.fixture(scope="session")
def e2e(tmp_path_factory) -> Fixtures:
    go_binary()
    root = tmp_path_factory.mktemp("e2e")
    origins, head = build_origins(root)
    cache = root / "direct-cache"
    work = root / "direct-work"
    work.mkdir()
    env = go_env(work, cache, "direct", origins)
    wanted = [f"{SIMPLE}@{v}" for v in ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0-rc.1")]
    wanted += [f"{SIMPLE}@{head[:12]}", f"{UPPER}@v1.0.0", f"{MAJOR}@v2.0.0", f"{MAJOR}@v2.1.0", f"{NOMOD}@v1.0.0"]
    items = download_json(run(["go", "mod", "download", "-json", *wanted], work, env).stdout)
    direct = {f"{i['Path']}@{i['Version']}": i for i in items}
    for item in items:
        assert "Error" not in item, item
    pseudo = next(v.split("@")[1] for v in direct if v.startswith(SIMPLE) and v.count("-") >= 2)
    return Fixtures(origins, direct, pseudo, cache)


@pytest.fixture(scope="session")
def seeded_root(e2e, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded") / "storage"
    result = subprocess.run(
        [*admin_command(), "--storage", "disk", "--storage-root", str(root), "import", str(e2e.direct_cache)],
        capture_output=True, text=True, env=source_env(), timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


@pytest.fixture(scope="session")
def daemon(seeded_root, tmp_path_factory):
    root, _ = seeded_root
    # A pure cache: never asks the origin (there is no network here anyway).
    d = start_daemon(tmp_path_factory.mktemp("daemon"), "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    yield d
    # twistd ends by re-raising SIGTERM after a clean shutdown.
    assert d.stop() in (0, -signal.SIGTERM), d.logs()
    assert "Traceback" not in d.logs()
