"""
The go command's transparency log (``golang.org/x/mod/sumdb/tlog``), as pure functions.

A log of records is a Merkle tree (RFC 6962 hashing: ``SHA-256(0x00 || record)``
for a leaf, ``SHA-256(0x01 || left || right)`` for a node).  Its hashes are
stored in one dense sequence (the *stored hash index*), so that appending
record ``n`` writes a few hashes at the end and never changes one already
written.  Tiles of height ``H`` cut that tree into pieces a client fetches
and checks on its own; a tree head (size and root hash) is what a server signs.

Nothing here does I/O.  Where a computation needs stored hashes, it comes in
two steps: ``*_indexes`` says which hashes to read, the function of the same
name computes the answer from them; a store in between does the reading.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Sequence

import attrs

HASH_SIZE = 32
#: The hash of the empty tree (RFC 6962 2.1): SHA-256 of nothing.
EMPTY_HASH = hashlib.sha256(b"").digest()
#: The tile height of the go command's checksum databases (sum.golang.org serves 8).
TILE_HEIGHT = 8


class ProofError(ValueError):
    """A proof, tree head or record does not check out."""


def record_hash(data: bytes) -> bytes:
    """The leaf hash of a record: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _maxpow2(n: int) -> tuple[int, int]:
    """The largest power of two ``k`` smaller than ``n`` (``n`` > 1), and ``log2 k``."""
    level = 0
    while 1 << (level + 1) < n:
        level += 1
    return 1 << level, level


def stored_hash_index(level: int, n: int) -> int:
    """Where the ``n``-th hash of ``level`` sits in the dense sequence of stored hashes."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: ``(level, n)``."""
    n = index // 2
    index_n = stored_hash_index(0, n)
    assert index_n <= index
    while True:
        following = index_n + 1 + _trailing_zeros(n + 1)
        if following > index:
            break
        n += 1
        index_n = following
    level = index - index_n
    return level, n >> level


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of ``n`` records stores."""
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


def append_indexes(n: int) -> list[int]:
    """The stored hashes that appending record ``n`` reads (the subtrees it completes), in increasing order."""
    m = _trailing_zeros(n + 1)
    return [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]


def append_hashes(n: int, leaf: bytes, old: Sequence[bytes]) -> list[bytes]:
    """The hashes to store, from ``stored_hash_index(0, n)`` on, when record ``n`` with leaf hash ``leaf`` is appended."""
    m = _trailing_zeros(n + 1)
    if len(old) != m:
        raise ValueError(f"appending record {n} needs {m} stored hashes, got {len(old)}")
    hashes = [leaf]
    h = leaf
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def _subtree_indexes(lo: int, hi: int, need: list[int]) -> list[int]:
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        assert lo & (k - 1) == 0
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _subtree_hash(lo: int, hi: int, hashes: Sequence[bytes]) -> tuple[bytes, Sequence[bytes]]:
    count = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        count += 1
        lo += k
    h = hashes[count - 1]
    for i in range(count - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h, hashes[count:]


def tree_indexes(n: int) -> list[int]:
    """The stored hashes the root of a tree of ``n`` records is computed from (at most ``1 + log2 n``)."""
    return _subtree_indexes(0, n, [])


def tree_hash(n: int, hashes: Sequence[bytes]) -> bytes:
    """The root hash of a tree of ``n`` records, from the hashes :func:`tree_indexes` names."""
    if n == 0:
        return EMPTY_HASH
    _check_count(hashes, len(tree_indexes(n)))
    h, rest = _subtree_hash(0, n, hashes)
    assert not rest
    return h


def _check_count(hashes: Sequence[bytes], want: int) -> None:
    if len(hashes) != want:
        raise ValueError(f"expected {want} hashes, got {len(hashes)}")


# -- record proofs (RFC 6962 "audit paths") --


def _leaf_proof_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_indexes(lo, lo + k, n, need)
        _subtree_indexes(lo + k, hi, need)
    else:
        _subtree_indexes(lo, lo + k, need)
        _leaf_proof_indexes(lo + k, hi, n, need)
    return need


def _leaf_proof(lo: int, hi: int, n: int, hashes: Sequence[bytes]) -> tuple[list[bytes], Sequence[bytes]]:
    if lo + 1 == hi:
        return [], hashes
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        proof, hashes = _leaf_proof(lo, lo + k, n, hashes)
        th, hashes = _subtree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _subtree_hash(lo, lo + k, hashes)
        proof, hashes = _leaf_proof(lo + k, hi, n, hashes)
    return proof + [th], hashes


def record_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hashes the proof that record ``n`` is in the tree of size ``t`` is built from."""
    if not 0 <= n < t:
        raise ValueError(f"record {n} is not in a tree of {t} records")
    return _leaf_proof_indexes(0, t, n, [])


def record_proof(t: int, n: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The proof that record ``n`` is in the tree of size ``t``."""
    _check_count(hashes, len(record_proof_indexes(t, n)))
    proof, rest = _leaf_proof(0, t, n, hashes)
    assert not rest
    return proof


def _run_record_proof(p: Sequence[bytes], lo: int, hi: int, n: int, leaf: bytes) -> bytes:
    if lo + 1 == hi:
        if p:
            raise ProofError("invalid transparency proof")
        return leaf
    if not p:
        raise ProofError("invalid transparency proof")
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(p[:-1], lo, lo + k, n, leaf), p[-1])
    return node_hash(p[-1], _run_record_proof(p[:-1], lo + k, hi, n, leaf))


def check_record(proof: Sequence[bytes], t: int, th: bytes, n: int, leaf: bytes) -> None:
    """Raise ProofError unless ``proof`` shows that the tree (``t``, ``th``) has ``leaf`` as record ``n``."""
    if not 0 <= n < t:
        raise ProofError(f"record {n} is not in a tree of {t} records")
    if _run_record_proof(proof, 0, t, n, leaf) != th:
        raise ProofError("invalid transparency proof")


# -- tree proofs (RFC 6962 consistency proofs) --


def _tree_proof_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if n == hi:
        return need if lo == 0 else _subtree_indexes(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_indexes(lo, lo + k, n, need)
        _subtree_indexes(lo + k, hi, need)
    else:
        _subtree_indexes(lo, lo + k, need)
        _tree_proof_indexes(lo + k, hi, n, need)
    return need


def _tree_proof(lo: int, hi: int, n: int, hashes: Sequence[bytes]) -> tuple[list[bytes], Sequence[bytes]]:
    if n == hi:
        if lo == 0:
            return [], hashes
        th, hashes = _subtree_hash(lo, hi, hashes)
        return [th], hashes
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof, hashes = _tree_proof(lo, lo + k, n, hashes)
        th, hashes = _subtree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _subtree_hash(lo, lo + k, hashes)
        proof, hashes = _tree_proof(lo + k, hi, n, hashes)
    return proof + [th], hashes


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hashes the proof that the tree of size ``t`` extends the one of size ``n`` is built from."""
    if not 1 <= n <= t:
        raise ValueError(f"no proof that a tree of {t} records extends one of {n}")
    return _tree_proof_indexes(0, t, n, [])


def tree_proof(t: int, n: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of size ``t`` holds the tree of size ``n`` as its prefix."""
    _check_count(hashes, len(tree_proof_indexes(t, n)))
    proof, rest = _tree_proof(0, t, n, hashes)
    assert not rest
    return proof


def _run_tree_proof(p: Sequence[bytes], lo: int, hi: int, n: int, old: bytes) -> tuple[bytes, bytes]:
    if n == hi:
        if lo == 0:
            if p:
                raise ProofError("invalid transparency proof")
            return old, old
        if len(p) != 1:
            raise ProofError("invalid transparency proof")
        return p[0], p[0]
    if not p:
        raise ProofError("invalid transparency proof")
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(p[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, p[-1])
    oh, th = _run_tree_proof(p[:-1], lo + k, hi, n, old)
    return node_hash(p[-1], oh), node_hash(p[-1], th)


def check_tree(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """Raise ProofError unless ``proof`` shows that the tree (``t``, ``th``) extends the tree (``n``, ``h``)."""
    if not 1 <= n <= t:
        raise ProofError(f"no proof that a tree of {t} records extends one of {n}")
    h2, th2 = _run_tree_proof(proof, 0, t, n, h)
    if h2 != h or th2 != th:
        raise ProofError("invalid transparency proof")


# -- tiles --

_PATH_BASE = 1000
_TILE_PATH = re.compile(r"^tile/([0-9]+)/([0-9]+|data)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([0-9]+))?$")


@attrs.frozen
class Tile:
    """
    ``width`` consecutive hashes at level ``height * level`` of the tree,
    starting at ``n << height``: a complete tile has ``2**height``.  Level -1
    is a data tile: the records themselves.
    """

    height: int
    level: int
    n: int
    width: int

    @property
    def complete(self) -> bool:
        return self.width == 1 << self.height

    def path(self) -> str:
        """``tile/H/L/[xNNN/...]NNN[.p/W]``."""
        n = self.n
        digits = f"{n % _PATH_BASE:03d}"
        while n >= _PATH_BASE:
            n //= _PATH_BASE
            digits = f"x{n % _PATH_BASE:03d}/{digits}"
        level = "data" if self.level == -1 else str(self.level)
        partial = "" if self.complete else f".p/{self.width}"
        return f"tile/{self.height}/{level}/{digits}{partial}"

    @classmethod
    def parse(cls, path: str) -> Tile:
        """A tile path, exactly as :meth:`path` writes it (ValueError otherwise)."""
        m = _TILE_PATH.match(path)
        if not m:
            raise ValueError(f"malformed tile path {path!r}")
        height = int(m.group(1))
        level = -1 if m.group(2) == "data" else int(m.group(2))
        if not 1 <= height <= 30 or level > 63:
            raise ValueError(f"malformed tile path {path!r}")
        width = 1 << height
        if m.group(4) is not None:
            width = int(m.group(4))
            if not 0 < width < 1 << height:
                raise ValueError(f"malformed tile path {path!r}")
        n = 0
        for part in m.group(3).split("/"):
            n = n * _PATH_BASE + int(part.removeprefix("x"))
        tile = cls(height, level, n, width)
        if tile.path() != path:  # leading zeros, needless x-elements, "0" written "000"...
            raise ValueError(f"malformed tile path {path!r}")
        return tile


def _tile_for_index(height: int, index: int) -> tuple[Tile, int, int]:
    level, n = split_stored_hash_index(index)
    tile_level = level // height
    level -= tile_level * height
    tile_n = (n << level) >> height
    n -= (tile_n << height) >> level
    width = (n + 1) << level
    return Tile(height, tile_level, tile_n, width), (n << level) * HASH_SIZE, ((n + 1) << level) * HASH_SIZE


def tile_for_index(height: int, index: int) -> Tile:
    """The narrowest tile of ``height`` that holds stored hash ``index``."""
    return _tile_for_index(height, index)[0]


def _tile_hash(data: bytes) -> bytes:
    if len(data) == HASH_SIZE:
        return data
    half = len(data) // 2
    return node_hash(_tile_hash(data[:half]), _tile_hash(data[half:]))


def hash_from_tile(tile: Tile, data: bytes, index: int) -> bytes:
    """Stored hash ``index``, computed from ``data``, the content of ``tile`` (which must hold it)."""
    if len(data) < tile.width * HASH_SIZE:
        raise ProofError(f"data too short for tile {tile.path()}")
    narrowest, start, end = _tile_for_index(tile.height, index)
    if (tile.level, tile.n) != (narrowest.level, narrowest.n) or tile.width < narrowest.width:
        raise ProofError(f"index {index} is in {narrowest.path()}, not {tile.path()}")
    return _tile_hash(data[start:end])


def tile_indexes(tile: Tile) -> list[int]:
    """The stored hashes a hash tile is made of, in order (its content is their concatenation)."""
    start = tile.n << tile.height
    return [stored_hash_index(tile.height * tile.level, start + i) for i in range(tile.width)]


def tile_available(tile: Tile, size: int) -> bool:
    """Whether a tree of ``size`` records has all of ``tile`` (hash or data tile)."""
    level = max(tile.level, 0)
    return (tile.n << tile.height) + tile.width <= size >> (tile.height * level)


def new_tiles(height: int, old: int, new: int) -> list[Tile]:
    """The tiles a tree grown from ``old`` to ``new`` records publishes (complete ones, then the partial ones)."""
    tiles = []
    level = 0
    while new >> (height * level) > 0:
        old_n, new_n = old >> (height * level), new >> (height * level)
        if old_n != new_n:
            for n in range(old_n >> height, new_n >> height):
                tiles.append(Tile(height, level, n, 1 << height))
            n = new_n >> height
            width = new_n - (n << height)
            if width > 0:
                tiles.append(Tile(height, level, n, width))
        level += 1
    return tiles


# -- tree heads and records as the checksum database writes them --

_TREE_PREFIX = b"go.sum database tree\n"


@attrs.frozen
class Tree:
    """A tree head: its size and root hash (what a database signs)."""

    n: int
    hash: bytes


def format_tree(tree: Tree) -> bytes:
    """``go.sum database tree\\n<N>\\n<base64 hash>\\n``."""
    return _TREE_PREFIX + f"{tree.n}\n{base64.b64encode(tree.hash).decode()}\n".encode()


def parse_tree(text: bytes) -> Tree:
    """A tree head's text (extra lines after the three are ignored, as the go command does)."""
    if not text.startswith(_TREE_PREFIX) or text.count(b"\n") < 3 or len(text) > 1_000_000:
        raise ProofError("malformed tree note")
    lines = text.split(b"\n", 3)
    if not re.fullmatch(rb"0|[1-9][0-9]{0,18}", lines[1]):
        raise ProofError("malformed tree note")
    try:
        h = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise ProofError("malformed tree note") from None
    if len(h) != HASH_SIZE:
        raise ProofError("malformed tree note")
    return Tree(int(lines[1]), h)


def valid_record_text(text: bytes) -> bool:
    """UTF-8, no control characters but newline, no blank line, ending in a newline."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not decoded.endswith("\n") or "\n\n" in decoded:
        return False
    return not any(c < " " and c != "\n" for c in decoded)


def format_record(record_id: int, text: bytes) -> bytes:
    """A record as a lookup answers it: its id, its text, a blank line."""
    if not valid_record_text(text):
        raise ValueError("malformed record data")
    return f"{record_id}\n".encode() + text + b"\n"


def parse_record(msg: bytes) -> tuple[int, bytes, bytes]:
    """``(id, text, rest)`` of a lookup answer (the rest is the signed tree head)."""
    first, sep, msg = msg.partition(b"\n")
    if not sep or not re.fullmatch(rb"-?[0-9]{1,19}", first):
        raise ProofError("malformed record data")
    end = msg.find(b"\n\n")
    if end < 0:
        raise ProofError("malformed record data")
    text, rest = msg[: end + 1], msg[end + 2 :]
    if not valid_record_text(text):
        raise ProofError("malformed record data")
    return int(first), text, rest
