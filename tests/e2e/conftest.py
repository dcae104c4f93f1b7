"""
Session fixtures for the end-to-end tests, built once and shared:

- git origins standing in for github.com;
- a module cache the go command filled directly from them (the reference hashes);
- a disk store seeded from that cache with ``athens-admin import``, served by a
  daemon that never asks the origin (``seeded``);
- a daemon that fills its cache from the origins through the go command, with a
  download file giving each mode a module and a filter file (``filling``).
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import attrs
import pytest

from athens.module import is_pseudo_version
from tests.daemon import Daemon, admin_command, source_env, start_daemon
from tests.gotool import Origins, download_json, go_binary, go_env, make_origins, run


@attrs.frozen
class Fixtures:
    origins: Origins
    #: module@version -> the JSON `go mod download -json` printed for the direct download.
    direct: dict[str, dict]
    pseudo: str  # the pseudo-version `simple@<commit>` resolved to
    direct_cache: Path
    head: str  # the untagged commit at the tip of simple
    seeded: tuple[str, ...]  # module@version of what the seeded store holds


O = "github.com/athens-test"
SIMPLE = f"{O}/simple"
UPPER = "github.com/AthensTest/Upper"
MAJOR = f"{O}/major/v2"
NOMOD = f"{O}/nomod"
INCOMPAT = f"{O}/incompat"
SUBV2 = f"{O}/subv2/v2"
MONO_SUB = f"{O}/mono/sub"
RETRACT = f"{O}/retract"
ASYNC = f"{O}/asyncmod"
CONCURRENT = f"{O}/concurrent"
MUTABLE = f"{O}/mutable"
BLOCKED = f"{O}/blocked"
EXCLUDED = f"{O}/excluded"
CHAIN = f"{O}/chain"
PASS = f"{O}/passthru"


def gomod(path: str) -> str:
    return f"module {path}\n\ngo 1.21\n"


def gofile(pkg: str, value: str) -> str:
    return f'package {pkg}\n\nfunc Value() string {{ return "{value}" }}\n'


def build_origins(root: Path) -> tuple[Origins, str]:
    origins = make_origins(root)
    simple = origins.repo(SIMPLE)
    for tag in ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0-rc.1"]:
        origins.commit(simple, {
            "go.mod": gomod(SIMPLE),
            "simple.go": f'package simple\n\n// Hello says which version this is.\nfunc Hello() string {{ return "simple {tag}" }}\n',
            "LICENSE": "MIT\n",
        }, tag)
    head = origins.commit(simple, {"extra.go": "package simple\n\nconst Extra = 1\n"})

    upper = origins.repo(UPPER)
    origins.commit(upper, {"go.mod": gomod(UPPER), "upper.go": 'package upper\n\nfunc Shout() string { return "UPPER" }\n'},
                   "v1.0.0")

    major = origins.repo(f"{O}/major")
    for tag in ("v2.0.0", "v2.1.0"):
        origins.commit(major, {"go.mod": gomod(MAJOR), "major.go": f'package major\n\nfunc Version() string {{ return "{tag}" }}\n'},
                       tag)

    nomod = origins.repo(NOMOD)
    origins.commit(nomod, {"nomod.go": 'package nomod\n\nfunc Old() string { return "no go.mod" }\n'}, "v1.0.0")

    incompat = origins.repo(INCOMPAT)
    for tag in ("v1.0.0", "v2.0.0", "v3.1.0"):
        origins.commit(incompat, {"incompat.go": gofile("incompat", tag)}, tag)

    subv2 = origins.repo(f"{O}/subv2")
    origins.commit(subv2, {"go.mod": gomod(f"{O}/subv2"), "a.go": gofile("subv2", "v1")}, "v1.0.0")
    origins.commit(subv2, {"v2/go.mod": gomod(SUBV2), "v2/a.go": gofile("subv2", "v2")}, "v2.0.0")

    mono = origins.repo(f"{O}/mono")
    origins.commit(mono, {"go.mod": gomod(f"{O}/mono"), "root.go": gofile("mono", "root")}, "v0.1.0")
    for tag in ("sub/v1.0.0", "sub/v1.1.0"):
        origins.commit(mono, {"sub/go.mod": gomod(MONO_SUB), "sub/sub.go": gofile("sub", tag)}, tag)

    retract = origins.repo(RETRACT)
    origins.commit(retract, {"go.mod": gomod(RETRACT), "r.go": gofile("retract", "v1.0.0")}, "v1.0.0")
    origins.commit(retract, {"go.mod": gomod(RETRACT) + "\nretract v1.0.0 // broken\n", "r.go": gofile("retract", "v1.1.0")},
                   "v1.1.0")

    for path in (ASYNC, CONCURRENT, MUTABLE, BLOCKED, EXCLUDED, CHAIN, PASS):
        repo = origins.repo(path)
        origins.commit(repo, {"go.mod": gomod(path), "m.go": gofile("m", path)}, "v1.0.0")
    origins.commit(origins.repos[CHAIN], {"m.go": gofile("m", "chain v1.1.0")}, "v1.1.0")
    return origins, head


#: Versions the direct download fetches: the reference hashes for every test.
def wanted(head: str) -> list[str]:
    return [f"{SIMPLE}@{v}" for v in ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0-rc.1", head[:12])] + [
        f"{UPPER}@v1.0.0", f"{MAJOR}@v2.0.0", f"{MAJOR}@v2.1.0", f"{NOMOD}@v1.0.0",
    ]


#: Fetched directly but not imported into the seeded store (the filling daemon must fetch them).
EXTRA = [f"{INCOMPAT}@v2.0.0+incompatible", f"{SUBV2}@v2.0.0", f"{MONO_SUB}@v1.1.0", f"{RETRACT}@v1.1.0",
         f"{ASYNC}@v1.0.0", f"{CONCURRENT}@v1.0.0", f"{MUTABLE}@v1.0.0", f"{CHAIN}@v1.1.0", f"{PASS}@v1.0.0"]


@pytest.fixture(scope="session")
def e2e(tmp_path_factory) -> Fixtures:
    go_binary()
    root = tmp_path_factory.mktemp("e2e")
    origins, head = build_origins(root)
    cache = root / "direct-cache"
    work = root / "direct-work"
    work.mkdir()
    env = go_env(work, cache, "direct", origins)
    items = download_json(run(["go", "mod", "download", "-json", *wanted(head)], work, env).stdout)
    extra_cache = root / "extra-cache"
    items += download_json(run(["go", "mod", "download", "-json", *EXTRA], work, go_env(work, extra_cache, "direct", origins)).stdout)
    for item in items:
        assert "Error" not in item, item
    direct = {f"{i['Path']}@{i['Version']}": i for i in items}
    pseudo = next(v.split("@")[1] for v in direct if v.startswith(SIMPLE + "@") and is_pseudo_version(v.split("@")[1]))
    seeded = tuple(k for k in direct if k not in EXTRA)
    return Fixtures(origins, direct, pseudo, cache, head, seeded)


@pytest.fixture(scope="session")
def seeded_root(e2e, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded") / "storage"
    result = subprocess.run(
        [*admin_command(), "--storage", "disk", "--storage-root", str(root), "import", str(e2e.direct_cache)],
        capture_output=True, text=True, env=source_env(), timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def stop_cleanly(d: Daemon) -> None:
    # twistd ends by re-raising SIGTERM after a clean shutdown.
    assert d.stop() in (0, -signal.SIGTERM), d.logs()
    assert "Traceback" not in d.logs(), d.logs()


@pytest.fixture(scope="session")
def daemon(seeded_root, tmp_path_factory):
    """The seeded store as a pure cache: it never asks the origin."""
    root, _ = seeded_root
    d = start_daemon(tmp_path_factory.mktemp("daemon"), "--storage", "disk", "--storage-root", str(root),
                     env={"ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline"})
    yield d
    stop_cleanly(d)


def fetcher_env(origins: Origins, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The daemon's go command fetches from the test origins, offline."""
    env = {
        "GO_BINARY_PATH": go_binary(),
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY=direct;GOSUMDB=off;GOTOOLCHAIN=local;GIT_TERMINAL_PROMPT=0;"
                                     f"GIT_CONFIG_NOSYSTEM=1;GIT_CONFIG_GLOBAL={origins.gitconfig}",
    }
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def filling(e2e, daemon, tmp_path_factory) -> Daemon:
    """Fills from the origins; a download file gives each mode a module; a filter file excludes some."""
    work = tmp_path_factory.mktemp("filling")
    (work / "download.hcl").write_text(f'''
# every mode, each for a module of its own
downloadURL = "{daemon.url}"
mode = "sync"
download "{MAJOR}" {{ mode = "redirect" }}
download "{NOMOD}" {{
    mode = "async_redirect"
}}
download "{ASYNC}" {{ mode = "async" }}
download "{BLOCKED},{O}/other-blocked" {{ mode = "none" }}
''')
    (work / "filter").write_text(f"# filter file\n- {EXCLUDED}\nD {O}/direct\n- {SIMPLE} v1.0\n")
    env = fetcher_env(e2e.origins, {
        "ATHENS_DOWNLOAD_MODE": f"file:{work / 'download.hcl'}",
        "ATHENS_FILTER_FILE": str(work / "filter"),
        "ATHENS_GLOBAL_ENDPOINT": daemon.url,
        "ATHENS_GOGET_DIR": str(work / "goget"),
    })
    (work / "goget").mkdir()
    d = start_daemon(work, "--storage", "disk", "--storage-root", str(work / "storage"), "--log-level", "debug", env=env)
    yield d
    stop_cleanly(d)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a redirect is an answer of its own (an HTTPError), not the download URL's


def wait_for(url: str, timeout: float = 60) -> bytes:
    """Poll until ``url`` itself answers 200 (a background fill landing); a redirect does not count."""
    opener = urllib.request.build_opener(_NoRedirect)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=10) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} still answers {e.code} after {timeout}s") from None
        time.sleep(0.2)
