"""
Signed notes and their keys, as ``golang.org/x/mod/sumdb/note`` writes them.

A note is text ending in a newline, a blank line, then one line a signature:
``— <name> <base64(key hash || signature)>``.  A verifier key (what a client
puts in ``GOSUMDB``) is ``<name>+<hash>+<base64(0x01 || Ed25519 public key)>``;
a signer key is ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || Ed25519 seed)>``.
The hash is the first four bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import unicodedata

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 1
_SIG_PREFIX = "\u2014 ".encode()


class NoteError(ValueError):
    """A key or note is malformed, or not signed by the key in hand."""


def valid_name(name: str) -> bool:
    """A key's name: not empty, no Unicode space, no ``+`` (the go command's rule)."""
    return bool(name) and "+" not in name and not any(c.isspace() or unicodedata.category(c) == "Zs" for c in name)


def key_hash(name: str, public: bytes) -> bytes:
    """The four bytes that name a key in signatures: ``SHA-256(name || "\\n" || 0x01 || public)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _decode(b64: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("malformed key") from None


@attrs.frozen
class VerifierKey:
    """A database's public key: it checks the signatures on tree heads."""

    name: str
    hash: bytes
    public: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """``name+hash+key``, checked as the go command checks it."""
        name, _, rest = text.strip().partition("+")
        hash_hex, _, key_b64 = rest.partition("+")  # base64 may hold "+"
        raw = _decode(key_b64)
        if len(hash_hex) != 8 or not _is_hex(hash_hex) or not valid_name(name) or not raw:
            raise NoteError(f"{text!r} is not a verifier key (name+hash+key)")
        if raw[0] != ALG_ED25519 or len(raw) != 33:
            raise NoteError(f"{text!r} is not an Ed25519 verifier key")
        if key_hash(name, raw[1:]) != bytes.fromhex(hash_hex):
            raise NoteError(f"{text!r}: the key hash does not match the key")
        return cls(name, bytes.fromhex(hash_hex), raw[1:])

    def text(self) -> str:
        """The key as ``GOSUMDB`` takes it."""
        return f"{self.name}+{self.hash.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
            return True
        except InvalidSignature:
            return False


@attrs.frozen
class SignerKey:
    """A database's private key: it signs tree heads.  Never logged (``repr`` hides the seed)."""

    name: str
    hash: bytes
    seed: bytes = attrs.field(repr=False)

    @classmethod
    def parse(cls, text: str) -> SignerKey:
        """``PRIVATE+KEY+name+hash+key``, checked as the go command checks it."""
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("not a signer key (PRIVATE+KEY+name+hash+key)")
        _, _, name, hash_hex, key_b64 = parts
        raw = _decode(key_b64)
        if len(hash_hex) != 8 or not _is_hex(hash_hex) or not valid_name(name) or not raw:
            raise NoteError("not a signer key (PRIVATE+KEY+name+hash+key)")
        if raw[0] != ALG_ED25519 or len(raw) != 33:
            raise NoteError("not an Ed25519 signer key")
        key = cls(name, bytes.fromhex(hash_hex), raw[1:])
        if key_hash(name, key.verifier().public) != key.hash:
            raise NoteError("the signer key's hash does not match its key")
        return key

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        """A new key pair for database ``name``."""
        if not valid_name(name):
            raise NoteError(f"{name!r} cannot name a key (no spaces, no '+')")
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        return cls(name, key_hash(name, private.public_key().public_bytes_raw()), seed)

    def text(self) -> str:
        return f"PRIVATE+KEY+{self.name}+{self.hash.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()}"

    def verifier(self) -> VerifierKey:
        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()
        return VerifierKey(self.name, key_hash(self.name, public), public)

    def sign(self, text: bytes) -> bytes:
        """The signed note of ``text`` (which must end in a newline)."""
        if not text.endswith(b"\n"):
            raise NoteError("a note's text ends in a newline")
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(text)
        b64 = base64.b64encode(self.hash + signature)
        return text + b"\n" + _SIG_PREFIX + self.name.encode() + b" " + b64 + b"\n"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def open_note(message: bytes, key: VerifierKey) -> bytes:
    """
    The text of a signed note, if ``key`` signed it (NoteError otherwise).
    Signatures by other keys are ignored, as the go command ignores them.
    """
    try:
        decoded = message.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("malformed note") from None
    if any(c < " " and c != "\n" for c in decoded):
        raise NoteError("malformed note")
    split = message.rfind(b"\n\n")
    if split < 0:
        raise NoteError("malformed note")
    text, signatures = message[: split + 1], message[split + 2 :]
    if not signatures.endswith(b"\n"):
        raise NoteError("malformed note")
    prefix = _SIG_PREFIX + key.name.encode() + b" "
    for line in signatures[:-1].split(b"\n"):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError("malformed note")
        if not line.startswith(prefix):
            continue
        try:
            raw = base64.b64decode(line[len(prefix) :], validate=True)
        except binascii.Error:
            raise NoteError("malformed note") from None
        if len(raw) < 5 or raw[:4] != key.hash:
            continue
        if not key.verify(text, raw[4:]):
            raise NoteError(f"invalid signature for key {key.name}")
        return text
    raise NoteError(f"the note is not signed by {key.name}")
