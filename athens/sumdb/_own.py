"""
What the organisation's checksum database vouches for, and when.

A version's record (its two go.sum lines) is logged when the version is
first stored: a private module's (``OwnSumDB.Patterns``, and ``NoSumPatterns``,
which no public database may be asked about) as first seen, a public
module's only once its hashes agree with the upstream checksum database.
Once logged, a version's hashes never change: a later copy that differs
(a moved tag, a rewritten repository) is refused, logged as a security
event and counted, and never stored.
"""

from __future__ import annotations

from typing import Sequence

import attrs
from twisted.logger import Logger

from athens.fetch.interface import OriginNotFound
from athens.metrics import Metrics
from athens.policy import match_patterns
from athens.sumdb._log import SumLog
from athens.sumdb._verifier import ChecksumMismatch, ChecksumVerifier, go_mod_hash

log = Logger()


class CannotVouch(OriginNotFound):
    """A public module that no upstream checksum database can confirm: it is not logged (404)."""


def go_sum_record(module: str, version: str, zip_hash: str, mod_hash: str) -> bytes:
    """The record text: the version's two go.sum lines."""
    return f"{module} {version} {zip_hash}\n{module} {version}/go.mod {mod_hash}\n".encode()


@attrs.define
class OwnSumDB:
    log: SumLog
    #: GOPRIVATE-style patterns of modules logged as first seen (OwnSumDB.Patterns and NoSumPatterns).
    private_patterns: Sequence[str] = ()
    #: Where public modules are confirmed; None: public modules are not logged.
    upstream: ChecksumVerifier | None = None
    metrics: Metrics = attrs.field(factory=Metrics)

    @property
    def name(self) -> str:
        return self.log.name

    def private(self, module: str) -> bool:
        return any(match_patterns(p, module) for p in self.private_patterns)

    async def admit(self, module: str, version: str, zip_hash: str, mod: bytes, verified: bool = False) -> int:
        """
        Make sure ``module@version`` is logged with these hashes, and return
        its record id.  ``verified``: the upstream database has agreed already.
        Raises ChecksumMismatch if the log (or the upstream database) holds
        other hashes; CannotVouch for a public module with no upstream database.
        """
        text = go_sum_record(module, version, zip_hash, go_mod_hash(mod))
        record_id = await self.log.lookup(module, version)
        if record_id is None:
            private = self.private(module)
            if not private and not verified:
                if self.upstream is None:
                    raise CannotVouch(
                        f"{module}@{version} is not in the checksum database {self.name}: it is a public module and "
                        "no upstream checksum database is configured to confirm it (SumDBs, SumDBKeys); private "
                        "modules are listed in OwnSumDB.Patterns")
                try:
                    await self.upstream.verify(module, version, zip_hash, mod)
                except ChecksumMismatch:
                    self.metrics.checksum_refusals.labels("upstream").inc()
                    raise
            record_id, added = await self.log.append(module, version, text)
            if added:
                self.metrics.sumdb_records.labels("private" if private else "public").inc()
                log.info("{what} logged in the checksum database {name} as record {id} ({how})",
                         what=f"{module}@{version}", name=self.name, id=record_id,
                         how="first seen" if private else "confirmed upstream")
        self._compare(module, version, text, await self.log.record(record_id))
        return record_id

    async def check_mod(self, module: str, version: str, mod: bytes) -> None:
        """A go.mod served alone agrees with the log, if the version is logged (ChecksumMismatch otherwise)."""
        record_id = await self.log.lookup(module, version)
        if record_id is None:
            return
        logged = await self.log.record(record_id)
        line = f"{module} {version}/go.mod {go_mod_hash(mod)}".encode()
        if line not in logged.split(b"\n"):
            self._refuse(module, version, line, logged)

    def _compare(self, module: str, version: str, text: bytes, logged: bytes) -> None:
        if logged != text:
            self._refuse(module, version, text, logged)

    def _refuse(self, module: str, version: str, got: bytes, logged: bytes) -> None:
        self.metrics.checksum_refusals.labels("own").inc()
        log.error(
            "SECURITY: {what} from the origin has {got}, but the checksum database {name} logged {want}: a moved tag "
            "or a rewritten repository; refused, nothing stored",
            what=f"{module}@{version}", got=got.decode().strip().replace("\n", "; "),
            want=logged.decode().strip().replace("\n", "; "), name=self.name, security=True,
            module=module, version=version,
        )
        raise ChecksumMismatch(f"{module}@{version}: checksum mismatch with the checksum database {self.name}, "
                               "which logged other hashes for this version (refused)")
