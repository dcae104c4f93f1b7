"""
Check what an upstream sent against the checksum database before storing it.

The database's ``lookup`` answer holds the record (``<module> <version>
h1:...`` for the zip and ``<module> <version>/go.mod h1:...``) followed by a
signed tree head.  The signature is checked with the database's public key
(``sum.golang.org`` built in, others from ``SumDBKeys`` in the go command's
``GOSUMDB`` form ``name+hash+key``), then the record's hashes are compared
with those of the zip and go.mod in hand.  A mismatch is refused, logged as
a security event, and never stored.  (The record's inclusion in the tree is
not proven here; the go command proves it itself when it verifies.)
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Sequence

import attrs
import treq
from twisted.logger import Logger

from athens.fetch.egress import via
from athens.fetch.interface import OriginError, OriginNotFound
from athens.module import escape
from athens.policy import match_patterns
from athens.sumdb._note import NoteError, VerifierKey, open_note

log = Logger()

KNOWN_KEYS = {"sum.golang.org": "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"}


class ChecksumMismatch(OriginError):
    """What the upstream sent is not what the checksum database recorded."""


def parse_key(text: str) -> VerifierKey:
    """A verifier key in the go command's ``GOSUMDB`` form ``name+hash+key`` (ValueError otherwise)."""
    return VerifierKey.parse(text)


def verify_note(note: bytes, key: VerifierKey) -> bytes:
    """The text of a signed note, if ``key`` signed it; raise ChecksumMismatch otherwise."""
    try:
        return open_note(note, key)
    except NoteError as e:
        raise ChecksumMismatch(f"the checksum database's tree head: {e}") from None


def parse_lookup(data: bytes) -> tuple[dict[str, str], bytes]:
    """``{"<module> <version>": h1, "<module> <version>/go.mod": h1}`` and the signed note after it."""
    head, sep, note = data.partition(b"\n\n")
    if not sep:
        raise ChecksumMismatch("the checksum database's answer has no tree head")
    records: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\n")[1:]:  # the first line is the record id
        fields = line.split()
        if len(fields) == 3 and fields[2].startswith("h1:"):
            records[f"{fields[0]} {fields[1]}"] = fields[2]
    return records, note


def go_mod_hash(mod: bytes) -> str:
    """go.sum's ``/go.mod`` hash: Hash1 over the single file go.mod."""
    line = f"{hashlib.sha256(mod).hexdigest()}  go.mod\n".encode()
    return "h1:" + base64.b64encode(hashlib.sha256(line).digest()).decode()


@attrs.define
class ChecksumVerifier:
    url: str
    #: Required: every answer's tree head must carry the database's signature.
    key: VerifierKey
    pool: Any
    reactor: Any
    no_sum_patterns: Sequence[str] = ()
    timeout: float = 30.0

    def skips(self, module: str) -> bool:
        return any(match_patterns(p, module) for p in self.no_sum_patterns)

    async def verify(self, module: str, version: str, zip_hash: str, mod: bytes) -> None:
        """The zip's and go.mod's hashes are the database's (refused with ChecksumMismatch otherwise)."""
        await self._verify(module, version, {f"{module} {version}": zip_hash,
                                             f"{module} {version}/go.mod": go_mod_hash(mod)})

    async def verify_mod(self, module: str, version: str, mod: bytes) -> None:
        """go.mod alone (served before, or without, its zip)."""
        await self._verify(module, version, {f"{module} {version}/go.mod": go_mod_hash(mod)})

    async def _verify(self, module: str, version: str, expected: dict[str, str]) -> None:
        if self.skips(module):
            return
        url = f"{self.url.rstrip('/')}/lookup/{escape(module)}@{escape(version)}"
        try:
            response = await treq.get(url, **via(self.pool), timeout=self.timeout, reactor=self.reactor)
            data = await treq.content(response)
        except Exception as e:
            raise OriginError(f"cannot reach the checksum database to verify {module}@{version}: {e}") from None
        if response.code in (404, 410):
            raise OriginNotFound(f"{module}@{version} is not in the checksum database: "
                                 f"{data[:200].decode('utf-8', 'replace').strip()}")
        if response.code != 200:
            raise OriginError(f"the checksum database answered {response.code} for {module}@{version}")
        records, note = parse_lookup(data)
        verify_note(note, self.key)
        for what, h1 in expected.items():
            if records.get(what) != h1:
                log.error(
                    "SECURITY: {what} from the upstream has {got}, the checksum database says {want}; refused",
                    what=what, got=h1, want=records.get(what), security=True,
                )
                raise ChecksumMismatch(f"{what}: checksum mismatch with the checksum database (refused)")


def verifier_key(name: str, configured: Sequence[str]) -> VerifierKey | None:
    """The key for database ``name``: configured (``SumDBKeys``), else built in, else none."""
    for text in configured:
        key = parse_key(text)
        if key.name == name:
            return key
    known = KNOWN_KEYS.get(name)
    return parse_key(known) if known else None
