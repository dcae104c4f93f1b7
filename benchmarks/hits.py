#!/usr/bin/env python3
"""
Cache hits against nginx (and Athens), on the same bytes: how far is the proxy from a static file server?

    .venv/bin/python benchmarks/hits.py [--seconds 4] [--rounds 3] [--connections 32,1000] [--workers 1,N]
    ATHENS_BIN=/path/to/athens .venv/bin/python benchmarks/hits.py ...   # adds the Go Athens
    ATHENS_BENCH_LOG_LEVEL=error ...   # Athens without its per-request log (its fastest); the proxy logs at info

Seeds one disk store (Athens' layout) with a small module (four versions, ~100 kB zips) and a 50 MiB
zip, and hard-links the same files into a GOPROXY tree for nginx.  For each worker count W it runs
nginx (``worker_processes W``) and ``twistd -n athens --workers W``; with ATHENS_BIN, the Athens
binary (one Go process, all cores) on the same store, compared with the proxy's one-per-core setup.
All serve from cache only (download mode none, network mode offline), log every request to a file
(access log at info; nginx's access_log on, unbuffered) and keep metrics on.  wrk loads each URL kind
(.info, .mod, zip, @v/list, @latest) on every server in turn, round after round, and the medians,
errors (non-2xx, socket errors), ratios and each server's peak RSS (sum of VmHWM over its process
tree) are printed.  Measures, never asserts; not part of the test run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.cache_hits import machine  # noqa: E402
from tests.daemon import Daemon, free_port, peak_rss_mib, source_env, start_daemon  # noqa: E402

SMALL, BIG = "example.com/bench/small", "example.com/bench/big"
VERSIONS = {SMALL: ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"], BIG: ["v1.0.0"]}
SIZES = {SMALL: 100_000, BIG: 50 << 20}
KINDS = {
    ".info": f"/{SMALL}/@v/v1.0.0.info",
    ".mod": f"/{SMALL}/@v/v1.0.0.mod",
    "zip 100kB": f"/{SMALL}/@v/v1.0.0.zip",
    "zip 50MiB": f"/{BIG}/@v/v1.0.0.zip",
    "@v/list": f"/{SMALL}/@v/list",
    "@latest": f"/{SMALL}/@latest",
}
BIG_CONNECTIONS = 8  # more clients on a 50 MiB file only queue
BUDGET_SECONDS = 540  # beyond this, many-connection cases run for .info and the small zip only
WRK_TIMEOUT = "10s"  # wrk's default 2 s would count slow answers as timeouts and drop their latencies

NGINX_CONF = """daemon off;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
{user}
events {{ worker_connections 8192; }}
http {{
    access_log {d}/access.log;
    sendfile on; tcp_nopush on; keepalive_requests 1000000;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    types {{ application/json info; text/plain mod; application/zip zip; }}
    default_type application/octet-stream;
    charset utf-8; charset_types text/plain;  # as the proxy sends them
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ /@v/list$ {{ types {{ }} default_type text/plain; }}
        location ~ /@latest$ {{ types {{ }} default_type application/json; }}
    }}
}}
"""


class Result(NamedTuple):
    rps: float
    mibps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int


def seed_store(store: Path) -> dict[str, str]:
    """Seed a disk store through benchmarks.seed; the ATHENS_* settings that serve it from cache only."""
    env = {"ATHENS_STORAGE_TYPE": "disk", "ATHENS_DISK_STORAGE_ROOT": str(store)}
    subprocess.run(
        [sys.executable, "-m", "benchmarks.seed", *(f"{m},{v},{SIZES[m]}" for m, vs in VERSIONS.items() for v in vs)],
        cwd=REPO, env=source_env(env), check=True,
    )
    return {**env, "ATHENS_DOWNLOAD_MODE": "none", "ATHENS_NETWORK_MODE": "offline", "ATHENS_LOG_LEVEL": "info"}


def goproxy_tree(store: Path, root: Path) -> None:
    """The store's files, hard-linked under GOPROXY names, plus ``@v/list`` and ``@latest`` files."""
    for module, versions in VERSIONS.items():
        vdir = root / module / "@v"
        vdir.mkdir(parents=True)
        for v in versions:
            for name, ext in ((f"{v}.info", "info"), ("go.mod", "mod"), ("source.zip", "zip")):
                os.link(store / module / v / name, vdir / f"{v}.{ext}")
        (vdir / "list").write_text("".join(v + "\n" for v in versions))
        os.link(vdir / f"{versions[-1]}.info", root / module / "@latest")


def wait_ready(daemon: Daemon, path: str, timeout: float = 30) -> Daemon:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"{daemon.log} exited with {daemon.process.returncode}:\n{daemon.logs()}")
        try:
            with urllib.request.urlopen(daemon.url + path, timeout=2) as r:
                if r.status == 200:
                    return daemon
        except OSError:
            time.sleep(0.1)
    daemon.stop()
    raise RuntimeError(f"{daemon.log}: not ready after {timeout}s:\n{daemon.logs()}")


def start_nginx(workdir: Path, root: Path, workers: int) -> Daemon:
    workdir.mkdir(parents=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        workers=workers, nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0], d=workdir, port=port, root=root,
        user="user root root;" if os.geteuid() == 0 else ""))
    log = workdir / "stderr.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                                   stdout=out, stderr=subprocess.STDOUT)
    return wait_ready(Daemon(process, port, log), KINDS[".mod"])


def start_athens(binary: str, workdir: Path, env: dict[str, str]) -> Daemon:
    """The Go Athens on the same store: log level info (its default is debug), GOMAXPROCS left at all cores."""
    workdir.mkdir(parents=True)
    port = free_port()
    env = {**env, "ATHENS_PORT": f":{port}", "ATHENS_GO_BINARY_ENV_VARS": "GOPROXY=off",
           "ATHENS_LOG_LEVEL": os.environ.get("ATHENS_BENCH_LOG_LEVEL", "info")}
    log = workdir / "athens.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary], cwd=workdir, env=source_env(env), stdout=out, stderr=subprocess.STDOUT)
    return wait_ready(Daemon(process, port, log), "/healthz")


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def tree_rss_mib(pid: int) -> float:
    def rss(p: int) -> float:
        try:
            return peak_rss_mib(p)
        except (OSError, RuntimeError):
            return 0.0  # exited meanwhile

    return sum(map(rss, process_tree(pid)))


def stop(daemon: Daemon) -> None:
    """Stop a server and any of its processes still alive after it exits."""
    tree = process_tree(daemon.process.pid)
    daemon.stop()
    for pid in tree[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def verify(servers: dict[str, Daemon]) -> dict[str, set[str]]:
    """GET every URL on every server: the kinds a server does not answer with 200, to skip; notes what differs."""
    skip: dict[str, set[str]] = {name: set() for name in servers}
    for kind, path in KINDS.items():
        bodies: dict[str, tuple[str, bytes]] = {}
        for name, daemon in servers.items():
            try:
                with urllib.request.urlopen(daemon.url + path, timeout=30) as r:
                    bodies[name] = (r.headers.get("content-type", ""), r.read())
                    continue
            except urllib.error.HTTPError as e:
                problem = f"{e.code} {e.read()[:200]!r}"
            except OSError as e:
                problem = str(e)
            print(f"ERROR: {name} {path}: {problem}; {kind} skipped for {name}")
            skip[name].add(kind)
        reference = next((b for n, b in bodies.items() if n.startswith("nginx")), None)
        for name, (ctype, got) in bodies.items():
            if reference is not None and (ctype, got) != reference:
                print(f"note: {name} {kind}: {ctype}, {len(got)} bytes {got[:40]!r}, nginx: {reference[0]}, "
                      f"{len(reference[1])} bytes {reference[1][:40]!r}")
    return skip


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def wrk(url: str, seconds: int, connections: int) -> Result:
    threads = min(2, connections)
    run = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT,
                          "--latency", url], check=False, capture_output=True, text=True)
    out = run.stdout
    if run.returncode != 0 or "Requests/sec" not in out:
        print(f"ERROR: wrk {url} exited {run.returncode}: {run.stderr.strip() or out.strip()}")
        return Result(0, 0, 0, 0, 0, 0)

    def number(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else 0.0

    transfer = re.search(r"Transfer/sec:\s+([0-9.]+)([KMGT]?)B", out)
    mib = float(transfer.group(1)) * 1024 ** "_KMGT".index(transfer.group(2)) / 2**20 if transfer else 0.0
    latency = {q: _ms(v, u) for q, v, u in re.findall(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m|h)", out, re.MULTILINE)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Result(number(r"Requests/sec:\s+([0-9.]+)"), mib, latency.get("50", 0.0), latency.get("99", 0.0),
                  int(number(r"Non-2xx or 3xx responses: (\d+)")), sum(map(int, errors.groups())) if errors else 0)


def plan(connections: list[int], seconds: int, rounds: int, servers: int) -> list[tuple[str, int]]:
    cases: list[tuple[str, int]] = []
    for c in connections:
        for kind in KINDS:
            case = (kind, min(c, BIG_CONNECTIONS) if kind == "zip 50MiB" else c)
            if case not in cases:
                cases.append(case)
    if len(cases) * rounds * servers * (seconds + 0.5) > BUDGET_SECONDS:
        low = max(min(connections), BIG_CONNECTIONS)
        cases = [(k, c) for k, c in cases if c <= low or k in (".info", "zip 100kB")]
    return cases


def log_problems(daemon: Daemon, name: str) -> None:
    """Count warning/error events in a server's logs (twistd, nginx's error.log, Athens), most frequent first."""
    level = re.compile(r'#(warn|error|critical)\]|\[(error|crit|alert|emerg)\]|level=(warn\w*|error|fatal|panic)'
                       r'|"level":"(warn\w*|error|fatal|panic)"|^panic:')
    found: Counter[str] = Counter()
    logs = [daemon.log] + ([daemon.log.parent / "error.log"] if name.startswith("nginx") else [])
    for path in logs:
        header, detail = "", ""
        with open(path, errors="replace") as f:
            for line in itertools.chain(f, [""]):  # "": the end flushes the last event
                if line[:1] in (" ", "\t"):  # a traceback under a twistd event: keep its Failure line
                    detail = line.strip() if line.strip().startswith("Failure:") else detail
                    continue
                if level.search(header):
                    found[re.sub(r"^\S+ |\[[0-9a-f-]{8,}\] ", "", f"{header} {detail}".strip())[:200]] += 1
                header, detail = line.rstrip(), ""
    print(f"{name}: {sum(found.values())} warning/error events in its logs"
          + "".join(f"\n    {n} x {text}" for text, n in found.most_common(3)))


def main() -> None:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", default="32,1000")
    p.add_argument("--workers", default=",".join(str(n) for n in sorted({1, cores})))
    p.add_argument("--only", default="", help="measure only these kinds, comma-separated (e.g. 'zip 100kB,.info')")
    args = p.parse_args()
    started = time.monotonic()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for wrk and the servers, which inherit it
    workers = [int(n) for n in args.workers.split(",")]
    athens_bin = os.environ.get("ATHENS_BIN")
    names = [f"{s}-{w}w" for w in workers for s in ("nginx", "proxy")] + (["athens"] if athens_bin else [])
    cases = plan([int(c) for c in args.connections.split(",")], args.seconds, args.rounds, len(names))
    if args.only:
        cases = [(k, c) for k, c in cases if k in args.only.split(",")]
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}; nproc {cores}; open files {hard}")
    print(f"servers: {', '.join(names)} (nginx: sendfile, access_log to a file; proxy twistd -n "
          f"athens, disk, log info to a file, metrics on{'; athens ' + athens_bin if athens_bin else ''})")
    print(f"plan:    {len(cases)} cases x {args.rounds} rounds x {len(names)} servers x {args.seconds}s "
          f"(~{len(cases) * args.rounds * len(names) * (args.seconds + 0.5) / 60:.1f} min), wrk -t2 --timeout "
          f"{WRK_TIMEOUT}: " + ", ".join(f"{k} c{c}" for k, c in cases))
    servers: dict[str, Daemon] = {}
    results: dict[tuple[str, int, str], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="athens-hits-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            env = seed_store(tmp / "store")
            goproxy_tree(tmp / "store", tmp / "goproxy")
            for w in workers:
                servers[f"nginx-{w}w"] = start_nginx(tmp / f"nginx-{w}w", tmp / "goproxy", w)
                servers[f"proxy-{w}w"] = start_daemon(tmp / f"proxy-{w}w", "--workers", str(w), env=env)
            if athens_bin:
                servers["athens"] = start_athens(athens_bin, tmp / "athens", env)
            skip = verify(servers)
            for kind, c in cases:
                for r in range(args.rounds):
                    line = []
                    for name, daemon in servers.items():
                        if kind in skip[name]:
                            continue
                        if daemon.process.poll() is not None:
                            print(f"ERROR: {name} exited with {daemon.process.returncode}")
                            skip[name].update(KINDS)
                            continue
                        res = wrk(daemon.url + KINDS[kind], args.seconds, c)
                        results.setdefault((kind, c, name), []).append(res)
                        big = kind == "zip 50MiB"
                        line.append(f"{name} {res.mibps:,.0f} MiB/s" if big else f"{name} {res.rps:,.0f}")
                    print(f"round {r + 1} {kind} c{c}: " + ", ".join(line), flush=True)
            rss = {name: tree_rss_mib(d.process.pid) for name, d in servers.items()}
            for name, daemon in list(servers.items()):
                stop(servers.pop(name))
                log_problems(daemon, name)
        finally:
            for daemon in servers.values():
                stop(daemon)
    report(cases, names, workers, results, rss)
    print(f"run time: {time.monotonic() - started:.0f}s")


def report(cases: list[tuple[str, int]], names: list[str], workers: list[int],
           results: dict[tuple[str, int, str], list[Result]], rss: dict[str, float]) -> None:
    """Medians over rounds; errors are totals.  'ratio' is proxy/nginx (same W) and, for Athens, proxy-Nw/athens."""
    top = f"proxy-{max(workers)}w"
    print(f"\n{'case':16}{'server':10}{'req/s':>10}{'MiB/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non2xx':>8}{'sockerr':>8}")
    for kind, c in cases:
        med: dict[str, Result] = {}
        for name in names:
            rs = results.get((kind, c, name))
            if not rs:
                continue
            med[name] = Result(*(statistics.median(x) for x in zip(*rs)))
            m = med[name]
            errors = (sum(x.non2xx for x in rs), sum(x.socket_errors for x in rs))
            print(f"{kind + ' c' + str(c):16}{name:10}{m.rps:>10,.0f}{m.mibps:>9,.1f}{m.p50_ms:>9.2f}{m.p99_ms:>9.2f}"
                  f"{errors[0]:>8}{errors[1]:>8}")
        key = (lambda m: m.mibps) if kind == "zip 50MiB" else (lambda m: m.rps)
        pairs = [(f"proxy-{w}w", f"nginx-{w}w") for w in workers] + [(top, "athens")]
        ratios = [f"{a}/{b} {key(med[a]) / key(med[b]):.2f}" for a, b in pairs if a in med and b in med and key(med[b])]
        print(f"{'':16}{'  '.join(ratios)}")
    print("peak RSS (MiB, sum of VmHWM over each process tree): "
          + ", ".join(f"{name} {value:,.0f}" for name, value in rss.items()))


if __name__ == "__main__":
    main()
