#!/usr/bin/env python3
"""
A cold ``go mod download all`` of a real module graph, direct from an upstream GOPROXY against through the proxy.

    .venv/bin/python benchmarks/cold_graph.py --gomod path/to/go.mod [--rounds 3] [--cache-dir DIR]
    ATHENS_BIN=/path/to/athens .venv/bin/python benchmarks/cold_graph.py ...   # adds the Go Athens

Why: a cold cache behind an upstream proxy is the common first contact with the proxy; the goal is at most
1.1x the time of going to the upstream directly.  How: once (cached under --cache-dir, keyed by the go.mod's
hash), ``go mod download all`` from proxy.golang.org fills a module cache whose ``cache/download`` is a GOPROXY
tree.  nginx serves it on loopback (a hard-linked copy: hits.start_nginx waits for its own probe file).  Each
round times, in turn, ``go mod download all`` with a fresh GOMODCACHE in a fresh copy of the module: straight
from nginx; through ``twistd -n athens`` (default workers, fresh disk store, upstream = nginx, checksum
verification off, log level info); with ATHENS_BIN, through the Go Athens (fresh disk store, sync download
mode, its go command pointed at nginx).  Prints times, medians, ratios to direct, the files each download got,
and nginx's requests per kind for each run: the upstream traffic each way causes.  Measures, never asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from athens.tap import default_workers  # noqa: E402
from benchmarks.cache_hits import machine  # noqa: E402
from benchmarks.hits import KINDS, log_problems, start_nginx, stop, wait_ready  # noqa: E402
from tests.daemon import Daemon, free_port, source_env, start_daemon  # noqa: E402
from tests.gotool import go_env  # noqa: E402

GO = "/usr/local/go/bin/go"
REQUEST = re.compile(r'"[A-Z]+ (\S+) HTTP/[\d.]+" (\d{3}) ')


def goenv(work: Path, proxy: str) -> dict[str, str]:
    """tests.gotool's explicit go environment (temporary GOPATH, GOMODCACHE, GOCACHE), GONOSUMDB unset."""
    env = go_env(work, work / "modcache", proxy)
    del env["GONOSUMDB"]
    return env


def module_dir(gomod: Path, work: Path) -> Path:
    """A fresh module directory: the go.mod and the go.sum beside it, if any."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(gomod, work / "go.mod")
    if (gomod.parent / "go.sum").is_file():
        shutil.copy(gomod.parent / "go.sum", work / "go.sum")
    return work


def remove(path: Path) -> None:
    """rm -rf, module caches' read-only directories included."""
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False, stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)


def download(work: Path, proxy: str, extra: str = "") -> tuple[float, Counter[str]]:
    """Time ``go mod download all``; the counts of .info/.mod/.zip files it left in cache/download."""
    env = goenv(work, proxy)
    env["GOFLAGS"] += extra
    start = time.monotonic()
    run = subprocess.run([GO, "mod", "download", "all"], cwd=work, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if run.returncode != 0:
        raise RuntimeError(f"go mod download all via {proxy} exited {run.returncode}:\n{run.stderr[-3000:]}")
    files = Counter(p.suffix for p in (work / "modcache/cache/download").rglob("*") if p.suffix in (".info", ".mod", ".zip"))
    return seconds, files


def prepare(gomod: Path, cache_dir: Path) -> Path:
    """The GOPROXY tree of the graph, downloaded once from proxy.golang.org and reused."""
    cache = cache_dir / hashlib.sha256(gomod.read_bytes()).hexdigest()[:16]
    tree = cache / "modcache/cache/download"
    if not (cache / "prepared").exists():
        seconds, files = download(module_dir(gomod, cache), "https://proxy.golang.org", " -modcacherw")
        (cache / "prepared").write_text(f"{gomod}\n")
        print(f"prepared {tree} from proxy.golang.org in {seconds:.1f}s: {dict(files)}")
    return tree


def nginx_tree(tree: Path, root: Path) -> None:
    """The tree hard-linked, plus the file hits.start_nginx probes for readiness."""
    shutil.copytree(tree, root, copy_function=os.link)
    probe = root / KINDS[".mod"].lstrip("/")
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("module probe\n")


def upstream_requests(log: Path, offset: int) -> tuple[Counter[str], int]:
    """nginx's requests logged past offset, by kind (plus 'non-200' and 'repeated'); the new offset."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    kinds: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    for path, status in REQUEST.findall(text):
        kinds[next((k for k in (".info", ".mod", ".zip", "list") if path.endswith(k)), "other")] += 1
        paths[path] += 1
        kinds["non-200"] += status != "200"
    kinds["repeated"] = sum(n - 1 for n in paths.values())
    return kinds, offset + len(text.encode())


def start_go_athens(binary: str, workdir: Path, upstream: str) -> Daemon:
    """The Go Athens on a fresh disk store; its go command fetches from nginx (no checksum database)."""
    (workdir / "store").mkdir(parents=True)
    port = free_port()
    env = {"ATHENS_STORAGE_TYPE": "disk", "ATHENS_DISK_STORAGE_ROOT": str(workdir / "store"), "ATHENS_PORT": f":{port}",
           "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream};GOSUMDB=off;GOTOOLCHAIN=local", "GO_BINARY_PATH": GO,
           "ATHENS_GONOSUM_PATTERNS": "*", "ATHENS_DOWNLOAD_MODE": "sync", "ATHENS_LOG_LEVEL": "error",
           "ATHENS_GOGET_DIR": str(workdir)}
    log = workdir / "athens.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary], cwd=workdir, env=source_env(env), stdout=out, stderr=subprocess.STDOUT)
    return wait_ready(Daemon(process, port, log), "/healthz")


def start_proxy(workdir: Path, upstream: str) -> Daemon:
    env = {"ATHENS_STORAGE_TYPE": "disk", "ATHENS_DISK_STORAGE_ROOT": str(workdir / "store"),
           "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream}", "ATHENS_VERIFY_CHECKSUMS": "false",
           "ATHENS_LOG_LEVEL": "info"}
    return start_daemon(workdir, "--workers", str(default_workers("disk")), env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gomod", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cache-dir", type=Path, default=Path("/work/scratch/cold-graph-cache"))
    args = p.parse_args()
    athens_bin = os.environ.get("ATHENS_BIN")
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}; nproc {os.cpu_count()}; {subprocess.run([GO, 'version'], capture_output=True, text=True).stdout.strip()}")
    tree = prepare(args.gomod.resolve(), args.cache_dir)
    servers: list[Daemon] = []
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="athens-cold-graph-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            nginx_tree(tree, tmp / "goproxy")
            nginx = start_nginx(tmp / "nginx", tmp / "goproxy", os.cpu_count() or 1)
            servers.append(nginx)
            access, offset = tmp / "nginx/access.log", 0
            print(f"nginx: {nginx.url}, worker_processes {os.cpu_count()}, sendfile; proxy: twistd -n athens --workers "
                  f"{default_workers('disk')}, disk, log info" + (f"; athens: {athens_bin}" if athens_bin else ""))
            ways: dict[str, Callable[[Path], Daemon] | None] = {"direct": None, "proxy": lambda d: start_proxy(d, nginx.url)}
            if athens_bin:
                ways["athens"] = lambda d: start_go_athens(athens_bin, d, nginx.url)
            for r in range(1, args.rounds + 1):
                for name, starter in ways.items():
                    work = tmp / f"{name}-{r}"
                    server = starter(work / "server") if starter else None
                    if server:
                        servers.append(server)
                    _, offset = upstream_requests(access, offset)  # drop readiness probes
                    try:
                        seconds, files = download(module_dir(args.gomod, work / "mod"), server.url if server else nginx.url)
                    except RuntimeError as e:
                        print(f"ERROR: round {r} {name}: {e}")
                        if server:
                            print(f"{server.log} (tail):\n{server.logs()[-2000:]}")
                        continue
                    finally:
                        if server:
                            stop(servers.pop())
                            if r == args.rounds:
                                log_problems(server, name)
                    upstream, offset = upstream_requests(access, offset)
                    times.setdefault(name, []).append(seconds)
                    print(f"round {r} {name:6} {seconds:7.2f}s  files: {files['.info']} .info {files['.mod']} .mod "
                          f"{files['.zip']} .zip  nginx requests: " + " ".join(f"{k} {v}" for k, v in upstream.items()),
                          flush=True)
                    remove(work)
        finally:
            for server in reversed(servers):
                stop(server)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print("medians: " + ", ".join(f"{n} {m:.2f}s" for n, m in medians.items()))
    if medians.get("direct"):
        print("ratios:  " + ", ".join(f"{n}/direct {m / medians['direct']:.2f}" for n, m in medians.items() if n != "direct"))


if __name__ == "__main__":
    main()
