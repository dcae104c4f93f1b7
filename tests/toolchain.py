"""
What a test needs to let the real go command switch toolchains offline.

- :func:`fake_toolchain`: a ``golang.org/toolchain`` module in the layout Go's
  distpack makes (``bin/go``, ``pkg/tool``, ``lib``, ``src`` with every
  ``go.mod`` renamed ``_go.mod``, vendor and testdata directories), whose
  ``bin/go`` is a script printing a version, plus one large incompressible
  tool, so that the zip is big enough to stream.
- :class:`ChecksumDB`: a checksum database of a few records (a real Merkle
  tree of up to 256 leaves, its one tile, signed tree heads), because the go
  command checks every toolchain against a checksum database, whatever
  ``GOSUMDB`` and ``GONOSUMDB`` say (only a lone ``file://`` GOPROXY is exempt).
- :class:`StaticServer`: a loopback HTTP server answering from a directory
  (GOPROXY layout) or from a checksum database, counting the paths asked.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Callable

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from athens.sumdb import go_mod_hash, parse_key
from athens.modzip import check_zip

TOOLCHAIN = "golang.org/toolchain"
TOOLCHAIN_MOD = b"module golang.org/toolchain\n"


def toolchain_version(go: str, goos: str, goarch: str) -> str:
    """``go1.99.0`` on linux/amd64 is ``v0.0.1-go1.99.0.linux-amd64``."""
    return f"v0.0.1-{go}.{goos}-{goarch}"


@attrs.frozen
class Toolchain:
    version: str
    zip: bytes
    info: bytes
    #: The h1: hash, as the checksum database records it.
    zip_hash: str
    #: What its ``bin/go`` prints for ``go version``.
    banner: str

    def records(self) -> bytes:
        """The checksum database's record for it."""
        return (f"{TOOLCHAIN} {self.version} {self.zip_hash}\n"
                f"{TOOLCHAIN} {self.version}/go.mod {go_mod_hash(TOOLCHAIN_MOD)}\n").encode()

    def publish(self, root: Path) -> None:
        """Into a GOPROXY-layout directory."""
        at = root / TOOLCHAIN / "@v"
        at.mkdir(parents=True, exist_ok=True)
        (at / f"{self.version}.zip").write_bytes(self.zip)
        (at / f"{self.version}.mod").write_bytes(TOOLCHAIN_MOD)
        (at / f"{self.version}.info").write_bytes(self.info)
        listing = at / "list"
        known = listing.read_text().split() if listing.exists() else []
        listing.write_text("".join(f"{v}\n" for v in sorted(set(known + [self.version]))))


#: A bin/go for the proxy's own go command: ``go mod download -json M@V`` answered from the files under
#: $FAKE_GO_MODULES (GOPROXY layout), copied into $GOMODCACHE as the go command would leave them.
MOD_DOWNLOAD_SCRIPT = """#!/bin/sh
[ "$1 $2 $3" = "mod download -json" ] || { echo "this test toolchain only does mod download -json: $*" >&2; exit 2; }
module="${4%@*}"; version="${4#*@}"
from="$FAKE_GO_MODULES/$module/@v"; to="$GOMODCACHE/cache/download/$module/@v"
mkdir -p "$to" && cp "$from/$version.info" "$from/$version.mod" "$from/$version.zip" "$to/" || exit 1
printf '{"Path": "%s", "Version": "%s", "Info": "%s", "GoMod": "%s", "Zip": "%s"}\\n' \\
    "$module" "$version" "$to/$version.info" "$to/$version.mod" "$to/$version.zip"
"""


def fake_toolchain(work: Path, go: str, goos: str, goarch: str, bulk: int = 24 << 20, script: str = "") -> Toolchain:
    version = toolchain_version(go, goos, goarch)
    banner = f"go version {go} {goos}/{goarch} (athens-py test toolchain)"
    prefix = f"{TOOLCHAIN}@{version}/"
    script = (script or f"#!/bin/sh\necho '{banner}'\n").encode()
    files: dict[str, bytes] = {
        "VERSION": f"{go}\ntime 2026-01-02T03:04:05Z\n".encode(),
        "bin/go": script,
        "bin/gofmt": b"#!/bin/sh\ncat\n",
        f"pkg/tool/{goos}_{goarch}/compile": os.urandom(bulk),  # big and incompressible: it streams
        f"pkg/tool/{goos}_{goarch}/vet": b"#!/bin/sh\nexit 0\n",
        "lib/time/zoneinfo.zip": _inner_zip(),
        "src/_go.mod": b"module std\n\ngo 1.99\n",
        "src/cmd/_go.mod": b"module cmd\n\ngo 1.99\n",
        "src/vendor/modules.txt": b"# golang.org/x/net v0.0.0\n## explicit\ngolang.org/x/net/idna\n",
        "src/vendor/golang.org/x/net/idna/idna.go": b"package idna\n",
        "src/cmd/go/testdata/script/mod_download.txt": b"go mod download\n",
        "src/cmd/go/testdata/mod/example.com_v1.0.0.txt": b"-- .mod --\nmodule example.com\n",
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{version}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(prefix + name, (2026, 1, 2, 3, 4, 6))
            info.external_attr = (0o755 if name.startswith(("bin/", "pkg/tool/")) else 0o644) << 16
            zf.writestr(info, data, zipfile.ZIP_STORED if "compile" in name else zipfile.ZIP_DEFLATED)
    zip_hash = check_zip(str(path), TOOLCHAIN, version, TOOLCHAIN_MOD)
    info = json.dumps({"Version": version, "Time": "2026-01-02T03:04:05Z"}).encode()
    return Toolchain(version, path.read_bytes(), info, zip_hash, banner)


def _inner_zip() -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("UTC", b"TZif2")
    return buf.getvalue()


# --- a checksum database ------------------------------------------------------------------------


def _record_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _tree_hash(leaves: list[bytes]) -> bytes:
    """RFC 6962's Merkle tree hash, as golang.org/x/mod/sumdb/tlog computes it."""
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node_hash(_tree_hash(leaves[:split]), _tree_hash(leaves[split:]))


@attrs.define
class ChecksumDB:
    """A checksum database whose whole tree fits in one tile (up to 256 records)."""

    name: str
    private: Ed25519PrivateKey = attrs.field(factory=Ed25519PrivateKey.generate)
    records: list[bytes] = attrs.field(factory=list)
    index: dict[str, int] = attrs.field(factory=dict)

    @property
    def vkey(self) -> str:
        raw = b"\x01" + self.private.public_key().public_bytes_raw()
        key_hash = hashlib.sha256(self.name.encode() + b"\n" + raw).digest()[:4]
        return f"{self.name}+{key_hash.hex()}+{base64.b64encode(raw).decode()}"

    def add(self, module_at_version: str, record: bytes) -> None:
        assert len(self.records) < 256
        self.index[module_at_version] = len(self.records)
        self.records.append(record)

    def _signed_tree(self) -> bytes:
        root = _tree_hash([_record_hash(r) for r in self.records])
        text = f"go.sum database tree\n{len(self.records)}\n{base64.b64encode(root).decode()}\n".encode()
        key = parse_key(self.vkey)
        signature = base64.b64encode(key.hash + self.private.sign(text)).decode()
        return text + f"\n\u2014 {self.name} {signature}\n".encode()

    def answer(self, path: str) -> bytes | None:
        """``/lookup/<module>@<version>`` and ``/tile/8/0/000[.p/<n>]``; None: not found."""
        if path.startswith("/lookup/"):
            target = path[len("/lookup/"):]
            if target not in self.index:
                return None
            i = self.index[target]
            return f"{i}\n".encode() + self.records[i] + b"\n" + self._signed_tree()
        n = len(self.records)
        if path in (f"/tile/8/0/000.p/{n}", "/tile/8/0/000" if n == 256 else ""):
            return b"".join(_record_hash(r) for r in self.records)
        return None


# --- a loopback HTTP server ---------------------------------------------------------------------


@attrs.define
class StaticServer:
    """Answers GETs from ``answer(path)``; every path asked is in ``asked``."""

    answer: Callable[[str], bytes | None]
    asked: list[str] = attrs.field(factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, suffix: str) -> int:
        return sum(1 for p in self.asked if p.endswith(suffix))

    def start(self) -> "StaticServer":
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the library's name
                owner.asked.append(self.path)
                data = owner.answer(self.path.split("?")[0])
                if data is None:
                    self.send_response(404)
                    data = b"not found\n"
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def directory(root: Path) -> Callable[[str], bytes | None]:
    """A GOPROXY-layout directory (paths as the go command escapes them)."""

    def answer(path: str) -> bytes | None:
        target = (root / path.lstrip("/")).resolve()
        if root.resolve() not in target.parents or not target.is_file():
            return None
        return target.read_bytes()

    return answer
