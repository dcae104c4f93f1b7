#!/usr/bin/env python3
"""
A cold ``go mod download all`` of a real module graph, direct from an upstream GOPROXY against through the proxy.

    .venv/bin/python benchmarks/cold_graph.py --gomod path/to/go.mod [--rounds 3] [--cache-dir DIR]
    ATHENS_BIN=/path/to/athens .venv/bin/python benchmarks/cold_graph.py ...   # adds the Go Athens
    ... --split-cores     # the go command on half the CPUs, nginx and the proxy on the other half
    ... --upstream https://proxy.golang.org   # a real upstream instead of nginx on loopback

Why: a cold cache behind an upstream proxy is the common first contact with the proxy; the goal is at most
1.1x the time of going to the upstream directly.  How: once (cached under --cache-dir, keyed by the go.mod's
hash), ``go mod download all`` from proxy.golang.org fills a module cache whose ``cache/download`` is a GOPROXY
tree: zips for the build list, go.mod files alone for the rest of the graph.  nginx serves a hard-linked copy
on loopback (plus the file hits.start_nginx probes).  Each round times, in turn, ``go mod download all`` with
a fresh GOMODCACHE (in memory: --client-dir) in a fresh copy of the module: straight from nginx; through
``twistd -n athens`` (default workers, fresh disk store, upstream nginx, checksum verification off, log level
info); with ATHENS_BIN,
through the Go Athens (fresh disk store, sync mode, its go command pointed at nginx).  The Go Athens fetches
a whole version, zip included, even for a .mod request: it 404s, and is skipped, where the tree has a go.mod
but no zip.  Prints times, medians, ratios to direct, CPU seconds of the go command and of the server, the
files each download got (and any difference from direct), and nginx's requests per kind during each run:
the upstream traffic each way causes ('repeated': the same path fetched again).  Measures, never asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import attrs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from athens.tap import default_workers  # noqa: E402
from benchmarks.cache_hits import machine  # noqa: E402
from benchmarks.hits import KINDS, log_problems, process_tree, start_nginx, stop, wait_ready  # noqa: E402
from tests.daemon import Daemon, free_port, source_env, start_daemon  # noqa: E402
from tests.gotool import go_binary, go_env  # noqa: E402

GO = go_binary()
FILES = (".info", ".mod", ".zip")
KINDS_SEEN = (*FILES, "list", "other", "non-200", "repeated")
REQUEST = re.compile(r'"[A-Z]+ (\S+) HTTP/[\d.]+" (\d{3}) ')
_READ: dict[Path, int] = {}  # how far each access log has been counted


def module_dir(gomod: Path, work: Path) -> Path:
    """A fresh module directory: the go.mod and the go.sum beside it, if any."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(gomod, work / "go.mod")
    if (gomod.parent / "go.sum").is_file():
        shutil.copy(gomod.parent / "go.sum", work / "go.sum")
    return work


#: With --split-cores: the CPUs of the go command, and of the servers (nginx, the proxy, Athens).
CLIENT_CPUS: set[int] | None = None
SERVER_CPUS: set[int] | None = None


def pin(pid: int, cpus: set[int] | None) -> None:
    """Every thread of a live process tree onto ``cpus`` (threads and processes it makes later inherit it)."""
    if cpus is None:
        return
    for p in process_tree(pid):
        for task in os.listdir(f"/proc/{p}/task"):
            try:
                os.sched_setaffinity(int(task), cpus)
            except OSError:
                pass  # ended meanwhile


def download(work: Path, proxy: str, extra: str = "") -> tuple[float, float, set[str]]:
    """Time ``go mod download all``: wall and CPU seconds, the .info/.mod/.zip files it left in cache/download."""
    env = go_env(work, work / "modcache", proxy)  # explicit: temporary GOPATH, GOMODCACHE, GOCACHE; GOSUMDB=off
    env["GOFLAGS"] += extra
    del env["GONOSUMDB"]
    cpu, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    run = subprocess.run([GO, "mod", "download", "all"], cwd=work, env=env, capture_output=True, text=True,
                         preexec_fn=(lambda: os.sched_setaffinity(0, CLIENT_CPUS)) if CLIENT_CPUS else None)
    seconds, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"go mod download all via {proxy} exited {run.returncode}:\n{run.stderr[-3000:]}")
    tree = work / "modcache/cache/download"
    files = {str(p.relative_to(tree)) for p in tree.rglob("*.*") if p.suffix in FILES}
    return seconds, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, files


def count(files: set[str]) -> str:
    return " ".join(f"{sum(f.endswith(k) for f in files)} {k}" for k in FILES)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a live process tree, the children it has reaped included."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(map(int, fields[11:15 if p == pid else 13]))  # utime stime (cutime cstime)
    return total / os.sysconf("SC_CLK_TCK")


def prepare(gomod: Path, cache_dir: Path) -> Path:
    """The GOPROXY tree of the graph, downloaded once from proxy.golang.org and reused."""
    cache = cache_dir / hashlib.sha256(gomod.read_bytes()).hexdigest()[:16]
    tree = cache / "modcache/cache/download"
    if not (cache / "prepared").exists():
        seconds, _, files = download(module_dir(gomod, cache), "https://proxy.golang.org", " -modcacherw")
        for extracted in (cache / "modcache").iterdir():  # keep only cache/ (the tree): GBs of sources otherwise
            if extracted.name != "cache":
                shutil.rmtree(extracted)
        (cache / "prepared").write_text(f"{gomod}\n")
        print(f"prepared {tree} from proxy.golang.org in {seconds:.1f}s: {count(files)}")
    return tree


def upstream_requests(log: Path) -> Counter[str]:
    """nginx's requests logged since the last call, by kind, plus 'non-200' and 'repeated' (same path again)."""
    with open(log, "rb") as f:
        f.seek(_READ.get(log, 0))
        text = f.read()
    _READ[log] = _READ.get(log, 0) + len(text)
    kinds: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    for path, status in REQUEST.findall(text.decode(errors="replace")):
        kinds[next((k for k in (*FILES, "list") if path.endswith(k)), "other")] += 1
        kinds["non-200"] += status != "200"
        paths[path] += 1
    kinds["repeated"] = sum(n - 1 for n in paths.values())
    return kinds


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


def measure(name: str, starter: Callable[[Path, str], Daemon] | None, work: Path, client: Path, gomod: Path,
            nginx: Daemon | Remote, direct: set[str] | None) -> tuple[float, set[str]]:
    """
    One timed download (through a fresh server in ``work``, if any; the go command's caches in ``client``),
    its line of output; nginx's log read past the probes.
    """
    server = starter(work / "server", nginx.url) if starter else None
    if server:
        pin(server.process.pid, SERVER_CPUS)
    access_log = nginx.log.parent / "access.log" if nginx.log else None
    try:
        if access_log:
            upstream_requests(access_log)  # skip readiness probes
        seconds, go_cpu, files = download(module_dir(gomod, client / "mod"), (server or nginx).url)
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n{server.log}, its end:\n{server.logs()[-1500:]}" if server else str(e)) from None
    finally:
        server_cpu = tree_cpu(server.process.pid) if server else 0.0
        if server:
            stop(server)
    upstream = upstream_requests(access_log) if access_log else Counter()
    differs = f"  DIFFERS from direct: {len(direct - files)} missing, {len(files - direct)} extra" \
        if direct is not None and files != direct else ""
    counted = "  nginx requests: " + " ".join(f"{upstream[k]} {k}" for k in KINDS_SEEN) if access_log else ""
    print(f"{name:6} {seconds:6.1f}s  cpu: go {go_cpu:.1f}s server {server_cpu:.1f}s  files: {count(files)}{differs}"
          f"{counted}", flush=True)
    if server:
        log_problems(server, name)
    return seconds, files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gomod", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "athens-py-bench" / "cold-graph",
                   help="where the graph's GOPROXY tree is kept between runs")
    p.add_argument("--client-dir", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                   help="where the go command's module cache goes (default: memory, /dev/shm): it writes GBs of "
                        "sources, the same in every way, whose disk write-back otherwise varies the times by 2x")
    p.add_argument("--upstream", default="", help="a real GOPROXY (https://proxy.golang.org) instead of nginx on "
                                                   "loopback: direct and the proxy's upstream (network noise included)")
    p.add_argument("--split-cores", action="store_true",
                   help="the go command on the first half of the CPUs, the servers on the rest (as in production, "
                        "where client and proxy share no cores)")
    args = p.parse_args()
    if args.split_cores:
        global CLIENT_CPUS, SERVER_CPUS
        cpus = sorted(os.sched_getaffinity(0))
        CLIENT_CPUS, SERVER_CPUS = set(cpus[: len(cpus) // 2]), set(cpus[len(cpus) // 2 :])
        if not CLIENT_CPUS:
            p.error("--split-cores needs at least 2 CPUs")
    athens_bin = os.environ.get("ATHENS_BIN")
    version = subprocess.run([GO, "version"], capture_output=True, text=True).stdout.strip()
    print(f"command: {' '.join(sys.argv)}\nmachine: {machine()}; nproc {os.cpu_count()}; {version}"
          + (f"; go command on CPUs {sorted(CLIENT_CPUS)}, servers on {sorted(SERVER_CPUS)}" if CLIENT_CPUS else ""))
    if args.upstream:
        print(f"upstream {args.upstream}; proxy: twistd -n athens --workers {default_workers('disk')}, disk, log info")
        with tempfile.TemporaryDirectory(prefix="athens-cold-graph-") as tmpdir:
            report(rounds(args, {"direct": None, "proxy": start_proxy}, Path(tmpdir), Remote(args.upstream)))
        return
    tree = prepare(args.gomod.resolve(), args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="athens-cold-graph-") as tmpdir:
        tmp = Path(tmpdir)
        shutil.copytree(tree, tmp / "goproxy", copy_function=os.link)
        (tmp / "goproxy" / KINDS[".mod"][1:]).parent.mkdir(parents=True, exist_ok=True)  # what start_nginx probes
        (tmp / "goproxy" / KINDS[".mod"][1:]).write_text("module probe\n")
        nginx = start_nginx(tmp / "nginx", tmp / "goproxy", os.cpu_count() or 1)
        pin(nginx.process.pid, SERVER_CPUS)
        try:
            print(f"nginx {nginx.url}: worker_processes {os.cpu_count()}, sendfile; proxy: twistd -n athens --workers "
                  f"{default_workers('disk')}, disk, log info" + (f"; athens: {athens_bin}" if athens_bin else ""))
            ways: dict[str, Callable[[Path, str], Daemon] | None] = {"direct": None, "proxy": start_proxy}
            if athens_bin:
                ways["athens"] = lambda d, upstream: start_go_athens(athens_bin, d, upstream)
            times = rounds(args, ways, tmp, nginx)
        finally:
            stop(nginx)
    report(times)


@attrs.frozen
class Remote:
    """A GOPROXY elsewhere (proxy.golang.org): its requests are not counted."""

    url: str
    log: None = None


def rounds(args: argparse.Namespace, ways: dict[str, Callable[[Path, str], Daemon] | None], tmp: Path,
           upstream: Daemon | Remote) -> dict[str, list[float]]:
    """Each way in turn, round after round: the seconds of each."""
    times: dict[str, list[float]] = {}
    for r in range(1, args.rounds + 1):
        direct: set[str] | None = None
        for name, starter in list(ways.items()):
            print(f"round {r} ", end="")
            try:
                with tempfile.TemporaryDirectory(dir=tmp) as work, \
                        tempfile.TemporaryDirectory(dir=args.client_dir) as client:  # (read-only files too)
                    seconds, files = measure(name, starter, Path(work), Path(client), args.gomod, upstream, direct)
            except RuntimeError as e:
                print(f"ERROR: {name}: {e}\n{name} skipped from now on")
                del ways[name]
                continue
            times.setdefault(name, []).append(seconds)
            direct = files if name == "direct" else direct
    return times


def report(times: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print("medians: " + ", ".join(f"{n} {m:.2f}s" for n, m in medians.items()))
    if medians.get("direct"):
        print("ratios:  " + ", ".join(f"{n}/direct {m / medians['direct']:.2f}" for n, m in medians.items()
                                      if n != "direct"))


if __name__ == "__main__":
    main()
