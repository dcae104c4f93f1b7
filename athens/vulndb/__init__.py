"""
The Go vulnerability database, mirrored and served at ``/vuln/``, and the policy that judges zips by it.

archive (zip and tar files), osv (which versions an entry affects), snapshot (one
checked copy), store (where the copy is kept: disk; shared: Redis, PostgreSQL,
object stores), database (the copy in service), mirror (copying from ``VulnDBURL``),
policy (``VulnPolicy``), web (the ``/vuln/`` endpoints).
"""

from athens.vulndb.database import VulnDatabase
from athens.vulndb.errors import InvalidDatabase, UpstreamFailed, VulnDBError
from athens.vulndb.mirror import Mirror, Refresher
from athens.vulndb.osv import Finding
from athens.vulndb.policy import MODES, Denied, VulnPolicy
from athens.vulndb.snapshot import Snapshot, build, from_archive
from athens.vulndb.store import IVulnStore, MemoryVulnStore, State, vuln_store

__all__ = [
    "MODES", "Denied", "Finding", "IVulnStore", "InvalidDatabase", "MemoryVulnStore", "Mirror", "Refresher",
    "Snapshot", "State", "UpstreamFailed", "VulnDBError", "VulnDatabase", "VulnPolicy", "build", "from_archive",
    "vuln_store",
]
