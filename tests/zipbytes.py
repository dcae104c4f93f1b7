"""
Zip files byte by byte, for the cases zipfile will not write: names that are not UTF-8, sizes and
CRCs that lie, data descriptors, compression methods Go cannot read, file modes.
"""

from __future__ import annotations

import struct
import zlib

import attrs

_LOCAL = struct.Struct("<4sHHHHHLLLHH")
_CENTRAL = struct.Struct("<4sHHHHHHLLLHHHHHLL")
_END = struct.Struct("<4sHHHHLLH")


def deflate(content: bytes) -> bytes:
    """Raw deflate, as a zip stores it."""
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(content) + c.flush()


@attrs.frozen
class Entry:
    """One zip entry; every header field that may lie defaults to the truth about ``content``."""

    name: bytes
    content: bytes = b""
    #: 0 stored, 8 deflated (anything else Go cannot read).
    method: int = 8
    #: The bytes in the file; None: ``content`` stored or deflated as ``method`` says.
    data: bytes | None = None
    crc: int | None = None
    size: int | None = None
    flags: int = 0
    #: Bytes written right after the data (a data descriptor), when flags has bit 3.
    descriptor: bytes = b""
    #: A Unix mode (``create_system`` 3), or None for an MS-DOS entry.
    mode: int | None = None
    #: The local header's signature.
    signature: bytes = b"PK\x03\x04"

    def stored(self) -> bytes:
        if self.data is not None:
            return self.data
        return deflate(self.content) if self.method == 8 else self.content


def build(entries: list[Entry]) -> bytes:
    """A zip holding ``entries`` in order, central directory included."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        data = e.stored()
        crc = zlib.crc32(e.content) if e.crc is None else e.crc
        size = len(e.content) if e.size is None else e.size
        offset = len(out)
        out += _LOCAL.pack(e.signature, 20, e.flags, e.method, 0, 0x21, crc, len(data), size, len(e.name), 0)
        out += e.name + data + e.descriptor
        made_by = (3 << 8 | 20) if e.mode is not None else 20
        attrs_ = (e.mode << 16) if e.mode is not None else 0
        central += _CENTRAL.pack(
            b"PK\x01\x02", made_by, 20, e.flags, e.method, 0, 0x21, crc, len(data), size, len(e.name), 0, 0, 0, 0,
            attrs_, offset,
        )
        central += e.name
    directory = len(out)
    out += central
    out += _END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), directory, 0)
    return bytes(out)
