"""
Fetch from the VCS through the go command, as Athens does.

Each call runs ``go mod download -json`` or ``go list -m -json`` in a
temporary GOPATH with the operator's environment (``GoBinaryEnvVars``,
default ``GOPROXY=direct``), at most ``GoGetWorkers`` at a time, each bounded
by ``StashTimeout``.  The temporary directory is removed in every outcome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from athens.fetch.interface import Fetched, IFetcher, Listing, OnZip, OriginError, OriginNotFound, OriginTimeout
from athens.fetch.process import ProcessTimeout, run
from athens.fetch.toolchains import ToolchainShelf
from athens.module import is_pseudo_version, sort_versions

log = Logger()

#: Variables of the daemon's environment the go command and git need.
INHERITED = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "SSH_AUTH_SOCK",
)

# The origin's words for "no such module or version": the client should fall back (404).
_NOT_FOUND = re.compile(
    r"not found|unknown revision|no matching versions|invalid version|does not appear to be a git repository"
    r"|repository not found|unrecognized import path|no such host|410 gone|404|disabled by goprivate"
    r"|terminal prompts disabled|malformed module path|does not contain package|no secure protocol",
    re.IGNORECASE,
)
_TIMEOUT = re.compile(r"timeout|timed out|deadline exceeded", re.IGNORECASE)
# The origin could not be reached at all (502), whatever the go command wrapped it in.
_UNREACHABLE = re.compile(
    r"could not resolve host|connection refused|network is unreachable|no route to host|connection reset"
    r"|failed to connect|tls handshake|certificate",
    re.IGNORECASE,
)


def classify(message: str) -> OriginError:
    """An error the client can act on, carrying the origin's message (first lines)."""
    text = " ".join(message.strip().split())[:2000] or "the go command failed without a message"
    if _TIMEOUT.search(text):
        return OriginTimeout(text)
    if _UNREACHABLE.search(text):
        return OriginError(text)
    if _NOT_FOUND.search(text):
        return OriginNotFound(text)
    return OriginError(text)


def _scrub(message: str, gopath: str) -> str:
    """The go command's words without this server's temporary paths (they reach clients and logs)."""
    for path in {gopath, os.path.realpath(gopath)}:
        message = message.replace(path, "$GOPATH")
    return message


def info_json(version: str, time: str | None) -> bytes:
    payload: dict[str, str] = {"Version": version}
    if time:
        payload["Time"] = time
    return json.dumps(payload).encode()


@implementer(IFetcher)
@attrs.define
class GoFetcher:
    reactor: Any
    go_binary: str = "go"
    env_vars: Sequence[str] = ("GOPROXY=direct",)
    workers: int = 10
    timeout: float = 300.0
    #: Where temporary GOPATHs go (``GoGetDir``); the system's temporary directory if empty.
    work_dir: str = ""
    #: Replaces HOME for the child (a private home holding .netrc/.hgrc), if set.
    home: str = ""
    no_sum_patterns: Sequence[str] = ()
    base_env: Mapping[str, str] = attrs.field(factory=lambda: dict(os.environ))
    #: Toolchains the go command switched to, kept for the next fetches (gomods/athens#2000); None: not kept.
    toolchains: ToolchainShelf | None = None
    #: How many go commands were started: observability, and tests count fetches.
    runs: int = 0
    _slots: DeferredSemaphore = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._slots = DeferredSemaphore(self.workers)

    def environment(self, gopath: str) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if k in INHERITED}
        if self.home:
            env["HOME"] = self.home
            env["NETRC"] = os.path.join(self.home, ".netrc")
        env.update(
            GOPATH=gopath,
            GOMODCACHE=os.path.join(gopath, "pkg", "mod"),
            GOCACHE=os.path.join(gopath, "cache"),
            GO111MODULE="on",
            # -modcacherw: the temporary module cache can be removed (and a toolchain moved out) by any user.
            GOFLAGS="-mod=mod -modcacherw",
        )
        if self.toolchains is not None:  # where the go command looks for a toolchain before downloading one
            env["PATH"] = os.pathsep.join(filter(None, [self.toolchains.bin, env.get("PATH", "")]))
        if self.no_sum_patterns:
            env["GONOSUMDB"] = ",".join(self.no_sum_patterns)
        for assignment in self.env_vars:
            key, _, value = assignment.partition("=")
            env[key.strip()] = value
        return env

    async def _go(self, args: list[str], gopath: str) -> dict[str, Any]:
        """Run one go command in ``gopath``; its JSON output, or the classified error."""
        work = os.path.join(gopath, "work")
        await deferToThread(os.makedirs, work, exist_ok=True)
        await self._slots.acquire()
        try:
            self.runs += 1
            log.debug("running {command}", command=" ".join(args))
            result = await run(self.reactor, [self.go_binary, *args], self.environment(gopath), work, self.timeout)
        except ProcessTimeout:
            raise OriginTimeout(f"the origin did not answer within {self.timeout:g}s (go {args[0]} {args[-1]})") from None
        except OSError as e:
            raise OriginError(f"cannot run the go command {self.go_binary!r}: {e}") from None
        finally:
            self._slots.release()
            if self.toolchains is not None:
                await deferToThread(self.toolchains.keep, os.path.join(gopath, "pkg", "mod"))
        stdout = result.stdout.decode("utf-8", "replace")
        try:
            payload = json.loads(stdout) if stdout.strip() else {}
        except ValueError:
            payload = {}
        if isinstance(payload, dict) and payload.get("Error"):
            raise classify(_scrub(str(payload["Error"]), gopath))
        if result.code != 0 or not isinstance(payload, dict) or not payload:
            raise classify(_scrub(result.stderr.decode("utf-8", "replace") or stdout, gopath))
        return payload

    async def _in_temp(self, args: list[str]) -> tuple[dict[str, Any], str]:
        gopath = await deferToThread(tempfile.mkdtemp, prefix="athens-go-", dir=self.work_dir or None)
        try:
            return await self._go(args, gopath), gopath
        except BaseException:
            await deferToThread(shutil.rmtree, gopath, True)
            raise

    def download(self, module: str, version: str, on_zip: OnZip | None = None) -> Deferred[Fetched]:
        # The go command hands over the zip only when it is complete: nothing to stream.
        return ensureDeferred(self._download(module, version))

    async def _download(self, module: str, version: str) -> Fetched:
        payload, gopath = await self._in_temp(["mod", "download", "-json", f"{module}@{version}"])

        async def cleanup() -> None:
            await deferToThread(shutil.rmtree, gopath, True)

        try:
            if payload.get("Version") != version or not payload.get("Zip") or not payload.get("GoMod"):
                raise OriginError(f"the go command returned {payload.get('Version')!r} for {module}@{version}")
            info, mod = await deferToThread(_read_both, payload["Info"], payload["GoMod"])
            return Fetched(module, version, info, mod, payload["Zip"], cleanup, checked=True)
        except BaseException:
            await cleanup()
            raise

    def query(self, module: str, query: str) -> Deferred[bytes]:
        return ensureDeferred(self._query(module, query))

    async def _query(self, module: str, query: str) -> bytes:
        payload, gopath = await self._in_temp(["list", "-m", "-json", f"{module}@{query}"])
        await deferToThread(shutil.rmtree, gopath, True)
        return info_json(payload["Version"], payload.get("Time"))

    def listing(self, module: str) -> Deferred[Listing]:
        return ensureDeferred(self._listing(module))

    async def _listing(self, module: str) -> Listing:
        payload, gopath = await self._in_temp(["list", "-m", "-versions", "-retracted", "-json", f"{module}@latest"])
        await deferToThread(shutil.rmtree, gopath, True)
        versions = [v for v in payload.get("Versions") or [] if not is_pseudo_version(v)]
        latest = info_json(payload["Version"], payload.get("Time")) if payload.get("Version") else None
        return Listing(tuple(sort_versions(versions)), latest)


def _read_both(info_path: str, mod_path: str) -> tuple[bytes, bytes]:
    with open(info_path, "rb") as f:
        info = f.read(1 << 20)
    with open(mod_path, "rb") as f:
        mod = f.read(16 << 20)
    return info, mod

