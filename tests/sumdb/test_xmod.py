"""
Known answers from golang.org/x/mod/sumdb: its own test vectors (read from its test files in the
module cache) and its own code (tests/sumdbjudge), against athens.sumdb's log and notes.
"""

from __future__ import annotations

import base64
import json
import re

import pytest
import pytest_twisted

from athens.sumdb import MemoryLogStore, NoteError, SignerKey, SumLog, VerifierKey, open_note
from athens.sumdb._tlog import (
    ProofError,
    Tile,
    Tree,
    check_record,
    check_tree,
    format_record,
    format_tree,
    new_tiles,
    parse_record,
    parse_tree,
    record_hash,
    record_proof,
    record_proof_indexes,
    tree_proof,
    tree_proof_indexes,
)
from tests.sumdb import xmod

NOTE_TEST = "sumdb/note/note_test.go"
EXAMPLE = "sumdb/note/example_test.go"
TLOG_NOTE_TEST = "sumdb/tlog/note_test.go"


def one(relative: str, name: str) -> bytes:
    values = xmod.assigned(relative, name)
    assert values, f"{name} not found in {relative}"
    return values[0]


def test_tree_head_and_record_hash():
    golden = one(TLOG_NOTE_TEST, "golden")
    assert golden.startswith(b"go.sum database tree\n")
    n = int(golden.split(b"\n")[1])
    assert format_tree(Tree(n, record_hash(b"hello world"))) == golden  # the vector hashes "hello world"
    assert parse_tree(golden) == Tree(n, record_hash(b"hello world"))


def test_malformed_and_padded_tree_heads():
    source = xmod.source(TLOG_NOTE_TEST)
    good = one(TLOG_NOTE_TEST, "in")
    bad = xmod.literals(source[source.index("badTrees"): source.index("for _, bad := range badTrees")])
    assert len(bad) == 3  # "not-" (prefixed to "in"), and two literals
    for text in bad + [b"not-" + good]:
        with pytest.raises(ProofError):
            parse_tree(text)
    for extra in (b"JOE", b"JOE\n", b"JOE\n" * 1000):
        assert parse_tree(good + extra) == parse_tree(good)


def test_record_format_and_parse():
    source = xmod.source(TLOG_NOTE_TEST)
    golden = xmod.assigned(TLOG_NOTE_TEST, "golden")[1]
    record_id, text = 123456789012, b"hello, world\n"
    assert format_record(record_id, text) == golden
    bad_texts = xmod.literals(source[source.index("var badTexts"): source.index("for _, bad := range badTexts")])
    assert b"hello\x01world\n" in bad_texts
    for bad in bad_texts:
        with pytest.raises(ValueError):
            format_record(record_id, bad)
    with_junk = xmod.assigned(TLOG_NOTE_TEST, "in")[1]
    assert parse_record(with_junk) == (record_id, text, b"junk on end\x01\xff")
    bad_records = xmod.literals(source[source.index("var badRecords"): source.index("for _, bad := range badRecords")])
    for bad in bad_records + [b"not-" + golden]:
        with pytest.raises(ProofError):
            parse_record(bad)


def test_tile_paths():
    table = xmod.source("sumdb/tlog/tlog_test.go")
    rows = re.findall(r'\{"(tile/[^"]+)", Tile\{([^}]*)\}\}', table)
    assert len(rows) >= 8
    for path, fields in rows:
        if not fields.strip():  # Tile{}: an invalid path
            with pytest.raises(ValueError):
                Tile.parse(path)
            continue
        h, level, n, w = (int(f) for f in fields.split(","))
        tile = Tile(h, level, n, w)
        assert Tile.parse(path) == tile
        assert tile.path() == path


def test_certificate_transparency_proofs():
    """x/mod's proof that its tlog is RFC 6962: real proofs from Google's Argon 2020 log."""
    data = xmod.root() / "sumdb/tlog/testdata/argon2020"
    sth = json.loads((data / "sth.json").read_text())
    leaf = base64.b64decode(json.loads((data / "entries.json").read_text())["entries"][0]["leaf_input"])
    audit = json.loads((data / "proof.json").read_text())
    root = base64.b64decode(sth["sha256_root_hash"])
    proof = [base64.b64decode(h) for h in audit["audit_path"]]
    check_record(proof, sth["tree_size"], root, audit["leaf_index"], record_hash(leaf))
    with pytest.raises(ProofError):
        check_record(proof, sth["tree_size"], root, audit["leaf_index"] + 1, record_hash(leaf))
    consistency = [base64.b64decode(h) for h in json.loads((data / "consistency.json").read_text())["consistency"]]
    ct = xmod.source("sumdb/tlog/ct_test.go")
    old_hash = base64.b64decode(re.search(r'ParseHash\("([^"]+)"\)', ct).group(1))
    old_size = int(re.search(r"CheckTree\(tp\.Proof, root\.Size, root\.Hash, ([0-9]+), oh\)", ct).group(1))
    check_tree(consistency, sth["tree_size"], root, old_size, old_hash)
    with pytest.raises(ProofError):
        check_tree(consistency, sth["tree_size"], root, old_size + 1, old_hash)


def test_a_note_signed_as_x_mod_signs_it():
    skey = one(EXAMPLE, "skey").decode()
    text = one(EXAMPLE, "text")
    signed = one(EXAMPLE, "msg")  # what note.Sign wrote, byte for byte (Ed25519 is deterministic)
    vkey = one(EXAMPLE, "vkey").decode()
    signer = SignerKey.parse(skey)
    assert signer.sign(text) == signed
    assert signer.verifier() == VerifierKey.parse(vkey) and signer.verifier().text() == vkey
    assert signer.text() == skey
    assert open_note(signed, VerifierKey.parse(vkey)) == text
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(signed.replace(b"problem,", b"problem;"), VerifierKey.parse(vkey))


def test_notes_with_two_signatures():
    peter = VerifierKey.parse(one(NOTE_TEST, "peterKey").decode())
    enoch = VerifierKey.parse(one(NOTE_TEST, "enochKey").decode())
    text = one(EXAMPLE, "text")
    both = text + b"\n" + one(NOTE_TEST, "peterSig") + one(NOTE_TEST, "enochSig")
    assert open_note(both, peter) == text == open_note(both, enoch)
    with pytest.raises(NoteError, match="not signed by"):
        open_note(text + b"\n" + one(NOTE_TEST, "enochSig"), peter)


def test_mangled_keys_are_refused():
    """x/mod's TestNewVerifier and TestNewSigner: every substring and every changed byte is refused."""
    vkey = one(NOTE_TEST, "vkey").decode()
    skey = one(NOTE_TEST, "skey").decode()
    for key, parse in ((vkey, VerifierKey.parse), (skey, SignerKey.parse)):
        parse(key)
        for i in range(len(key) + 1):
            for j in range(i + 1, len(key) + 1):
                if (i, j) != (0, len(key)):
                    with pytest.raises(NoteError):
                        parse(key[i:j])
        for i in range(len(key)):
            with pytest.raises(NoteError):
                parse(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])
    for bad in re.findall(r'badKey\("([^"]+)"\)', xmod.source(NOTE_TEST)):
        with pytest.raises(NoteError):
            VerifierKey.parse(bad)


def test_generated_keys_work_with_each_other():
    signer = SignerKey.generate("EnochRoot")
    again = SignerKey.parse(signer.text())
    assert again == signer and "seed" not in repr(signer).replace("seed=", "")
    verifier = VerifierKey.parse(signer.verifier().text())
    assert open_note(again.sign(b"hi\n"), verifier) == b"hi\n"
    with pytest.raises(NoteError):
        open_note(SignerKey.generate("EnochRoot").sign(b"hi\n"), verifier)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return xmod.build_judge(tmp_path_factory.mktemp("sumdbjudge"))


#: Sizes around every tile boundary of height 8 (levels 0 and 1) and beyond.
SIZES = [1, 2, 3, 7, 8, 9, 255, 256, 257, 511, 512, 513, 600]


@pytest_twisted.ensureDeferred
async def test_tree_heads_tiles_and_proofs_agree_with_x_mod(judge):
    records = [f"example.com/m{i} v1.0.{i} h1:{base64.b64encode(bytes([i % 256]) * 32).decode()}\n"
               f"example.com/m{i} v1.0.{i}/go.mod h1:{base64.b64encode(bytes([i % 7]) * 32).decode()}\n".encode()
               for i in range(max(SIZES))]
    signer = SignerKey.generate("sum.judge.test")
    pairs = [(600, 1), (600, 257), (513, 256), (512, 511), (257, 255), (9, 8)]
    answer = xmod.judge(judge, {"records": [base64.b64encode(r).decode() for r in records], "sizes": SIZES,
                                "proofs": pairs, "skey": signer.text()})

    log = SumLog(signer, MemoryLogStore())
    by_size = {s["n"]: s for s in answer["sizes"]}
    for i, record in enumerate(records):
        assert await log.append(f"example.com/m{i}", f"v1.0.{i}", record) == (i, True)
        if i + 1 not in by_size:
            continue
        want = by_size[i + 1]
        assert base64.b64encode((await log.head()).hash).decode() == want["hash"]
        assert (await log.latest()).decode() == want["signed"]
        paths = {t.path() for t in new_tiles(8, 0, i + 1)}
        assert paths == {p for p in want["tiles"] if "/data/" not in p}
        for path, data in want["tiles"].items():
            assert await log.tile(Tile.parse(path)) == base64.b64decode(data), path

    hashes = log.store._hashes  # (the memory store's list: the proofs are pure functions over it)
    for proof in answer["proofs"]:
        t, n = proof["t"], proof["n"]
        ours = tree_proof(t, n, [hashes[i] for i in tree_proof_indexes(t, n)])
        assert [base64.b64encode(h).decode() for h in ours] == proof["tree"]
        for r, want in enumerate(proof["records"]):
            ours = record_proof(n, r, [hashes[i] for i in record_proof_indexes(n, r)])
            assert [base64.b64encode(h).decode() for h in ours] == want
