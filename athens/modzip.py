"""
The module zip rules the go command enforces, and the ``h1:`` hash of a zip.

Blocking (zipfile reads the file): call from a thread.  Used before anything
from outside (an imported cache, later an upstream) is stored, so storage
only ever holds zips the go command will accept.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import stat
import zipfile

from athens.module import InvalidInput, check_file_path

MAX_ZIP_FILE = 500 << 20
MAX_UNZIPPED = 500 << 20
MAX_GO_MOD = 16 << 20
MAX_LICENSE = 16 << 20
_READ = 1 << 20


class InvalidZip(ValueError):
    """The zip breaks a module zip rule; the text says which."""


def check_zip(path: str, module: str, version: str, go_mod: bytes | None = None) -> str:
    """Check the zip at ``path`` for ``module@version``; return its ``h1:`` hash."""
    prefix = f"{module}@{version}/"
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InvalidZip(f"not a readable zip file: {e}") from None
    with zf:
        infos = zf.infolist()
        _check_entries(infos, prefix)
        lines = []
        unzipped = 0
        for info in sorted(infos, key=lambda i: i.filename):
            digest, size = _digest(zf, info, MAX_UNZIPPED - unzipped)
            unzipped += size
            lines.append(f"{digest}  {info.filename}\n")
            name = info.filename[len(prefix) :]
            if name == "go.mod" and go_mod is not None:
                if zf.read(info) != go_mod:
                    raise InvalidZip("go.mod in the zip differs from the .mod file")
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def _check_entries(infos: list[zipfile.ZipInfo], prefix: str) -> None:
    if sum(i.compress_size for i in infos) > MAX_ZIP_FILE:
        raise InvalidZip(f"zip larger than {MAX_ZIP_FILE} bytes")
    if sum(i.file_size for i in infos) > MAX_UNZIPPED:
        raise InvalidZip(f"total uncompressed size over {MAX_UNZIPPED} bytes")
    folded: dict[str, str] = {}
    for info in infos:
        if "\n" in info.filename:
            raise InvalidZip(f"file name with a newline: {info.filename!r}")
        if not info.filename.startswith(prefix):
            raise InvalidZip(f"{info.filename!r}: path does not have prefix {prefix!r}")
        name = info.filename[len(prefix) :]
        if name == "":
            continue
        is_dir = name.endswith("/")
        name = name.rstrip("/") if is_dir else name
        if posixpath.normpath(name) != name:
            raise InvalidZip(f"{info.filename!r}: file path is not clean")
        try:
            check_file_path(name)
        except InvalidInput as e:
            raise InvalidZip(f"{info.filename!r}: {e}") from None
        if is_dir:
            continue
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise InvalidZip(f"{info.filename!r}: not a regular file (a symlink or device): the go command refuses it")
        key = name.casefold()
        if key in folded:
            raise InvalidZip(f"case-insensitive file name collision: {folded[key]!r} and {name!r}")
        folded[key] = name
        if name == "go.mod" and info.file_size > MAX_GO_MOD:
            raise InvalidZip(f"go.mod over {MAX_GO_MOD} bytes")
        if name == "LICENSE" and info.file_size > MAX_LICENSE:
            raise InvalidZip(f"LICENSE over {MAX_LICENSE} bytes")


def _digest(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> tuple[str, int]:
    """sha256 of one entry, read in chunks; the declared sizes are not trusted."""
    h = hashlib.sha256()
    size = 0
    try:
        with zf.open(info) as member:
            while chunk := member.read(_READ):
                size += len(chunk)
                if size > budget:
                    raise InvalidZip(f"total uncompressed size over {MAX_UNZIPPED} bytes")
                h.update(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
        raise InvalidZip(f"{info.filename!r}: unreadable entry: {e}") from None
    return h.hexdigest(), size
