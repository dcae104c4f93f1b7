"""
The module zip rules the go command enforces, and the ``h1:`` hash of a zip.

A zip is stored only if the go command would extract it: the rules of
``golang.org/x/mod/zip.Unzip`` (names, prefix, collisions, ``go.mod`` placement,
size limits), entries read the way Go's ``archive/zip`` reads them (stored or
deflated, exactly the declared size, the CRC), and ``dirhash.HashZip`` for the
hash.  tests/test_xmod_agreement.py holds this to x/mod's own vectors and code.
Two rules go further, on purpose: a symlink or device entry is refused (the go
command never puts one in a zip), and so is a file whose path has an element
over 255 bytes (extracting it fails on every common file system).

Blocking (reads the file): call from a thread.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import posixpath
import stat
import struct
import zipfile
import zlib
from typing import BinaryIO, Iterable, Iterator

from athens.module import MAX_ELEMENT_LENGTH, InvalidInput, check_file_path

#: zip.MaxZipFile: the largest zip file, and the largest sum of its files' declared sizes.
MAX_ZIP_FILE = 500 << 20
MAX_UNZIPPED = 500 << 20
#: zip.MaxGoMod and zip.MaxLICENSE: the largest go.mod and LICENSE at the module root.
MAX_GO_MOD = 16 << 20
MAX_LICENSE = 16 << 20
_READ = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
_UTF8_NAME = 0x800
_DATA_DESCRIPTOR = 0x8


class InvalidZip(ValueError):
    """The zip breaks a module zip rule; the text says which."""


def check_zip(path: str, module: str, version: str, go_mod: bytes | None = None) -> str:
    """Check the zip at ``path`` for ``module@version``; return its ``h1:`` hash."""
    prefix = f"{module}@{version}/"
    size = os.stat(path).st_size
    if size > MAX_ZIP_FILE:
        raise InvalidZip(f"module zip file is too large ({size} bytes; limit is {MAX_ZIP_FILE} bytes)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as e:
        raise InvalidZip(f"not a readable zip file: {e}") from None
    with zf, open(path, "rb") as raw:
        entries = [(_raw_name(info), info) for info in zf.infolist()]
        _check_entries(entries, prefix)
        lines = []
        for name, info in sorted(entries, key=lambda e: e[0]):
            h = hashlib.sha256()
            for chunk in _contents(raw, info, name):
                h.update(chunk)
            if name == prefix + "go.mod" and go_mod is not None:
                if b"".join(_contents(raw, info, name)) != go_mod:
                    raise InvalidZip("go.mod in the zip differs from the .mod file")
            lines.append(f"{h.hexdigest()}  {name}\n")
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def _raw_name(info: zipfile.ZipInfo) -> str:
    """
    The entry's name as Go sees it: its bytes, whatever the UTF-8 flag says (zipfile decodes
    cp437 without the flag and cuts at a NUL), with bytes that are not UTF-8 kept as surrogates
    so that the path check refuses them.
    """
    raw = info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8_NAME else "cp437")
    return raw.decode("utf-8", "surrogateescape")


def _check_entries(entries: list[tuple[str, zipfile.ZipInfo]], prefix: str) -> None:
    """zip.checkZip, entry by entry, in its order; plus the two rules of our own (see the module docstring)."""
    collisions = _Collisions()
    unzipped = 0
    for full, info in entries:
        if not full.startswith(prefix):
            raise InvalidZip(f"{full!r}: path does not have prefix {prefix!r}")
        name = full[len(prefix) :]
        if name == "":
            continue
        is_dir = name.endswith("/")
        if is_dir:
            name = name[:-1]
        if _clean(name) != name:
            raise InvalidZip(f"{full!r}: file path is not clean")
        try:
            check_file_path(name)
        except InvalidInput as e:
            raise InvalidZip(f"{full!r}: {e}") from None
        collisions.check(name, is_dir)
        if is_dir:
            continue
        base = name.rpartition("/")[2]
        if base.isascii() and base.lower() == "go.mod":
            if base != name:
                raise InvalidZip(f"{full!r}: go.mod file not in module root directory")
            if name != "go.mod":
                raise InvalidZip(f"{full!r}: go.mod files must have lowercase names")
        size = info.file_size
        if size >= 1 << 63 or size > MAX_UNZIPPED - unzipped:
            raise InvalidZip(f"total uncompressed size of module contents too large (max size is {MAX_UNZIPPED} bytes)")
        unzipped += size
        if name == "go.mod" and size > MAX_GO_MOD:
            raise InvalidZip(f"go.mod file too large (max size is {MAX_GO_MOD} bytes)")
        if name == "LICENSE" and size > MAX_LICENSE:
            raise InvalidZip(f"LICENSE file too large (max size is {MAX_LICENSE} bytes)")
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise InvalidZip(f"{full!r}: not a regular file (a symlink or device): the go command never makes one")
        if any(len(elem.encode()) > MAX_ELEMENT_LENGTH for elem in name.split("/")):
            raise InvalidZip(f"{full!r}: a path element longer than {MAX_ELEMENT_LENGTH} bytes cannot be extracted")


def _clean(name: str) -> str:
    """Go's path.Clean for a relative path (posixpath.normpath keeps a leading ``//``)."""
    cleaned = posixpath.normpath(name)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


class _Collisions:
    """zip's collisionChecker: one entry a name, case folded; every parent is a directory."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, bool]] = {}

    def check(self, name: str, is_dir: bool) -> None:
        while name:
            key = name.lower() if name.isascii() else "".join(map(_fold, name))  # (ASCII folds to lower case)
            if key not in self._seen:
                self._seen[key] = (name, is_dir)
            else:
                other, other_is_dir = self._seen[key]
                if other != name:
                    raise InvalidZip(f"case-insensitive file name collision: {other!r} and {name!r}")
                if other_is_dir != is_dir:
                    raise InvalidZip(f"entry {name!r} is both a file and a directory")
                if not is_dir:
                    raise InvalidZip(f"multiple entries for file {name!r}")
            name, is_dir = posixpath.dirname(name), True


@functools.lru_cache(maxsize=4096)
def _fold(c: str) -> str:
    """
    The rune Go's collision check folds ``c`` to: the same for two runes exactly when Unicode's
    simple case folding (CaseFolding.txt, statuses C and S) maps them to the same rune.
    """
    c = _NEWER_SIMPLE_FOLDS.get(c, c)
    folded = c.casefold()
    if len(folded) == 1:
        return folded
    lower = c.lower()  # a full folding (ß -> ss): the simple one is the lower case, or the rune itself
    return lower if len(lower) == 1 else c


#: Simple case foldings (status S) newer than the Unicode database of Python 3.11, which Go has.
_NEWER_SIMPLE_FOLDS = {"\u1fd3": "\u0390", "\u1fe3": "\u03b0", "\ufb05": "\ufb06"}


def _contents(raw: BinaryIO, info: zipfile.ZipInfo, name: str) -> Iterator[bytes]:
    """
    An entry's bytes as Go's archive/zip ``File.Open`` gives them: the local header must be
    there, a directory has no contents, only stored and deflated data can be read, the data
    must come to exactly the declared size, and the CRC must match.
    """
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(header)[0] != b"PK\x03\x04":
        raise InvalidZip(f"{name!r}: not a valid zip file (no local header)")
    if name.endswith("/"):
        if info.file_size:
            raise InvalidZip(f"{name!r}: a directory with contents")
        return
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidZip(f"{name!r}: unsupported compression method {info.compress_type}")
    _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    raw.seek(start)
    data: Iterable[bytes]
    if info.compress_type == zipfile.ZIP_DEFLATED and max(info.compress_size, info.file_size) < _READ:
        data = _inflated_at_once(raw.read(info.compress_size), info.file_size, name)  # most files: one call
    else:
        data = _stored(raw, info.compress_size)
        if info.compress_type == zipfile.ZIP_DEFLATED:
            data = _inflated(data, name)
    size = crc = 0
    for chunk in data:
        size += len(chunk)
        if size > info.file_size:
            raise InvalidZip(f"{name!r}: more data than the declared size")
        crc = zlib.crc32(chunk, crc)
        yield chunk
    if size != info.file_size:
        raise InvalidZip(f"{name!r}: less data than the declared size")
    if info.flag_bits & _DATA_DESCRIPTOR:
        raw.seek(start + info.compress_size)
        descriptor = raw.read(16)
        if descriptor[:4] == _DESCRIPTOR_SIGNATURE:
            descriptor = descriptor[4:]
        if len(descriptor) < 12 or descriptor[:4] != struct.pack("<L", info.CRC) or crc != info.CRC:
            raise InvalidZip(f"{name!r}: checksum error")
    elif info.CRC and crc != info.CRC:  # Go checks a CRC of 0 only against a data descriptor
        raise InvalidZip(f"{name!r}: checksum error")


def _stored(raw: BinaryIO, left: int) -> Iterator[bytes]:
    """The entry's bytes as they are in the file: ``left`` of them, or fewer at the end of the file."""
    while left > 0 and (chunk := raw.read(min(left, _READ))):
        left -= len(chunk)
        yield chunk


def _inflated_at_once(compressed: bytes, size: int, name: str) -> tuple[bytes]:
    """
    A small entry inflated in one call, as :func:`_inflated` gives it: up to one byte more than the
    declared ``size`` (so that more data shows), the end of the input before the end of the stream refused.
    """
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflate.decompress(compressed, size + 1)
    except zlib.error as e:
        raise InvalidZip(f"{name!r}: corrupt deflated data: {e}") from None
    if not inflate.eof and len(data) <= size:
        raise InvalidZip(f"{name!r}: unexpected end of deflated data")
    return (data,)


def _inflated(compressed: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Raw deflate up to the end of its last block (bytes after it are ignored, as Go does), in bounded chunks."""
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        while not inflate.eof:
            data = inflate.unconsumed_tail
            if not data:
                pending = inflate.decompress(b"", _READ)  # output zlib still holds back
                if pending or inflate.eof:
                    yield pending
                    continue
                data = next(compressed, b"")
                if not data:
                    raise InvalidZip(f"{name!r}: unexpected end of deflated data")
            yield inflate.decompress(data, _READ)
    except zlib.error as e:
        raise InvalidZip(f"{name!r}: corrupt deflated data: {e}") from None
