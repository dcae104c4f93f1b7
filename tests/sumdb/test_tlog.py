"""The transparency log's pure functions: stored hashes, tiles, record and tree proofs, formats."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens.sumdb._tlog import (
    EMPTY_HASH,
    ProofError,
    Tile,
    Tree,
    append_hashes,
    append_indexes,
    check_record,
    check_tree,
    format_record,
    format_tree,
    hash_from_tile,
    new_tiles,
    parse_record,
    parse_tree,
    record_hash,
    record_proof,
    record_proof_indexes,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    tile_available,
    tile_for_index,
    tile_indexes,
    tree_hash,
    tree_indexes,
    tree_proof,
    tree_proof_indexes,
)


class Recording:
    """Stored hashes in a list, recording every read: each read asks only for hashes already stored, in order."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.reads: list[list[int]] = []

    def read(self, indexes: list[int]) -> list[bytes]:
        self.reads.append(indexes)
        assert indexes == sorted(indexes), indexes
        assert all(0 <= i < len(self.hashes) for i in indexes), (indexes, len(self.hashes))
        return [self.hashes[i] for i in indexes]

    def append(self, data: bytes) -> None:
        n = sum(1 for _ in self.leaves())
        self.hashes += append_hashes(n, record_hash(data), self.read(append_indexes(n)))

    def leaves(self):
        i = 0
        while stored_hash_index(0, i) < len(self.hashes):
            yield self.hashes[stored_hash_index(0, i)]
            i += 1

    def tree(self, n: int) -> bytes:
        return tree_hash(n, self.read(tree_indexes(n)))


def flip(proof: list[bytes], k: int) -> list[bytes]:
    bad = list(proof)
    bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
    return bad


def build(count: int) -> Recording:
    log = Recording()
    for i in range(count):
        log.append(f"leaf {i}".encode())
    return log


@pytest.fixture(scope="module")
def hundred() -> tuple[Recording, list[bytes]]:
    log = Recording()
    trees = []
    for i in range(100):
        log.append(f"leaf {i}".encode())
        assert len(log.hashes) == stored_hash_count(i + 1)
        trees.append(log.tree(i + 1))
    return log, trees


def test_the_empty_tree_is_the_hash_of_nothing():
    assert tree_hash(0, []) == EMPTY_HASH == hashlib.sha256(b"").digest()


def test_leaves_and_nodes_are_domain_separated():
    assert record_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    left, right = record_hash(b"a"), record_hash(b"b")
    assert record_hash(b"a") != hashlib.sha256(b"a").digest()
    log = Recording()
    log.append(b"a")
    log.append(b"b")
    assert log.tree(2) == hashlib.sha256(b"\x01" + left + right).digest() == log.hashes[2]


def test_every_record_proof_checks_and_every_corrupted_one_fails(hundred):
    log, trees = hundred
    leaves = list(log.leaves())
    for t in (1, 2, 3, 7, 8, 9, 63, 64, 65, 99, 100):
        for n in range(t):
            proof = record_proof(t, n, log.read(record_proof_indexes(t, n)))
            check_record(proof, t, trees[t - 1], n, leaves[n])
            for k in range(len(proof)):
                with pytest.raises(ProofError):
                    check_record(flip(proof, k), t, trees[t - 1], n, leaves[n])
            with pytest.raises(ProofError):
                check_record(proof + [EMPTY_HASH], t, trees[t - 1], n, leaves[n])
            if t > 1:
                with pytest.raises(ProofError):
                    check_record(proof, t, trees[t - 1], (n + 1) % t, leaves[n])


def test_every_tree_proof_checks_and_every_corrupted_one_fails(hundred):
    log, trees = hundred
    for t in (1, 2, 5, 8, 31, 32, 33, 64, 100):
        for n in range(1, t + 1):
            proof = tree_proof(t, n, log.read(tree_proof_indexes(t, n)))
            check_tree(proof, t, trees[t - 1], n, trees[n - 1])
            for k in range(len(proof)):
                with pytest.raises(ProofError):
                    check_tree(flip(proof, k), t, trees[t - 1], n, trees[n - 1])
            if n < t:  # a tree that is not a prefix of the larger one has no proof
                with pytest.raises(ProofError):
                    check_tree(proof, t, trees[t - 1], n, trees[n])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_proofs_between_any_two_sizes(data):
    t = data.draw(st.integers(1, 300))
    n = data.draw(st.integers(1, t))
    log = build(t)
    big, small = log.tree(t), log.tree(n)
    check_tree(tree_proof(t, n, log.read(tree_proof_indexes(t, n))), t, big, n, small)
    r = data.draw(st.integers(0, t - 1))
    check_record(record_proof(t, r, log.read(record_proof_indexes(t, r))), t, big, r, list(log.leaves())[r])


@given(st.integers(0, 25), st.integers(0, 1 << 40))
def test_stored_hash_index_round_trips(level, n):
    assert split_stored_hash_index(stored_hash_index(level, n)) == (level, n)


@pytest.mark.parametrize("height", [1, 2, 3, 8])
def test_tiles_grow_by_extension_and_hold_every_stored_hash(height):
    log = Recording()
    tiles: dict[Tile, bytes] = {}
    for i in range(150):
        before = len(log.hashes)
        log.append(f"leaf {i}".encode())
        for tile in new_tiles(height, i, i + 1):
            data = b"".join(log.read(tile_indexes(tile)))
            assert len(data) == tile.width * 32 and tile_available(tile, i + 1)
            older = tiles.get(Tile(tile.height, tile.level, tile.n, tile.width - 1), b"")
            assert data.startswith(older) and len(older) == len(data) - 32, tile.path()
            tiles[tile] = data
        for index in range(before, len(log.hashes)):
            tile = tile_for_index(height, index)
            assert hash_from_tile(tile, tiles[tile], index) == log.hashes[index], (tile.path(), index)
    # the tiles of a tree are exactly those its growth published, at their latest widths
    final = new_tiles(height, 0, 150)
    assert all(tiles[t] == b"".join(log.read(tile_indexes(t))) for t in final)


def test_a_tile_beyond_the_tree_is_not_available():
    assert tile_available(Tile(8, 0, 0, 5), 5) and not tile_available(Tile(8, 0, 0, 6), 5)
    assert not tile_available(Tile(8, 0, 0, 256), 255) and tile_available(Tile(8, 0, 0, 256), 300)
    assert not tile_available(Tile(8, 1, 0, 1), 255) and tile_available(Tile(8, 1, 0, 1), 256)
    assert tile_available(Tile(8, -1, 1, 44), 300) and not tile_available(Tile(8, -1, 1, 45), 300)


def test_hash_from_tile_refuses_the_wrong_tile():
    log = build(16)
    tile = tile_for_index(2, 20)
    data = b"".join(log.read(tile_indexes(tile)))
    assert hash_from_tile(tile, data, 20) == log.hashes[20]
    with pytest.raises(ProofError):
        hash_from_tile(Tile(2, tile.level, tile.n + 1, tile.width), data, 20)
    with pytest.raises(ProofError):
        hash_from_tile(tile, data[:-1], 20)


@given(st.integers(1, 30), st.integers(-1, 63), st.integers(0, 10**12), st.data())
def test_tile_paths_round_trip(height, level, n, data):
    width = data.draw(st.integers(1, 1 << min(height, 20)))
    tile = Tile(height, level, n, min(width, 1 << height))
    assert Tile.parse(tile.path()) == tile


@pytest.mark.parametrize("path", ["tile/8/0/1", "tile/8/0/0001", "tile/8/0/x000/001", "tile/0/0/000",
                                  "tile/31/0/000", "tile/8/-1/000", "tile/8/0/000.p/0", "tile/8/0/000.p/256",
                                  "tile/8/0/000.p/01", "tile/8/data/x1/000", "tile/8/0/000/", "tiles/8/0/000",
                                  "tile/8/64/000"])
def test_malformed_tile_paths_are_refused(path):
    with pytest.raises(ValueError):
        Tile.parse(path)


@given(st.integers(0, 2**63 - 1), st.binary(min_size=32, max_size=32))
def test_tree_heads_round_trip(n, h):
    assert parse_tree(format_tree(Tree(n, h)) + b"extra\n") == Tree(n, h)


@pytest.mark.parametrize("text", [b"go.sum database tree\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                                  b"go.sum database tree\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                                  b"go.sum database tree\n1\nAAAA\n", b"go.sum database tree\n1\n"])
def test_malformed_tree_heads_are_refused(text):
    with pytest.raises(ProofError):
        parse_tree(text)


@given(st.integers(0, 2**62), st.lists(st.text(st.characters(min_codepoint=32, blacklist_categories=("Cs",)),
                                               min_size=1), min_size=1, max_size=4))
def test_records_round_trip(record_id, lines):
    text = "".join(line + "\n" for line in lines).encode()
    assert parse_record(format_record(record_id, text) + b"rest") == (record_id, text, b"rest")
