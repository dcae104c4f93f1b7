"""
Checksum databases: the public ones this proxy carries and checks against, and the organisation's own.

- :mod:`._tlog` and :mod:`._note`: the go command's transparency log and
  signed notes, as pure functions (``golang.org/x/mod/sumdb/tlog`` and ``note``).
- :mod:`._verifier`: checks what an upstream sent against a database's lookup.
- :mod:`._proxy`: carries ``/sumdb/<name>/...`` of the configured databases.
- :mod:`._store`, :mod:`._sqlstore`, :mod:`._redisstore`: where the own database's log lives.
- :mod:`._log`, :mod:`._own`, :mod:`._server`: the own database: its log, what it vouches for, its routes.
"""

from athens.sumdb._factory import build_own_sumdb, load_signer, open_log_store
from athens.sumdb._log import SumLog, TileNotFound
from athens.sumdb._note import NoteError, SignerKey, VerifierKey, open_note
from athens.sumdb._own import CannotVouch, OwnSumDB, go_sum_record
from athens.sumdb._proxy import SumDBProxy, TileCache, sumdb_name
from athens.sumdb._server import OwnSumDBResource
from athens.sumdb._store import ILogStore, LogCorrupt, MemoryLogStore
from athens.sumdb._verifier import (
    KNOWN_KEYS,
    ChecksumMismatch,
    ChecksumVerifier,
    go_mod_hash,
    parse_key,
    parse_lookup,
    verifier_key,
    verify_note,
)

__all__ = [
    "KNOWN_KEYS",
    "CannotVouch",
    "ChecksumMismatch",
    "ChecksumVerifier",
    "ILogStore",
    "LogCorrupt",
    "MemoryLogStore",
    "NoteError",
    "OwnSumDB",
    "OwnSumDBResource",
    "SignerKey",
    "SumDBProxy",
    "SumLog",
    "TileCache",
    "TileNotFound",
    "VerifierKey",
    "build_own_sumdb",
    "go_mod_hash",
    "go_sum_record",
    "load_signer",
    "open_log_store",
    "open_note",
    "parse_key",
    "parse_lookup",
    "sumdb_name",
    "verifier_key",
    "verify_note",
]
