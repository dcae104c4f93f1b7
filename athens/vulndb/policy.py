"""
The vulnerability policy (``VulnPolicy``): what to do with the zip of a version the database flags.

``off`` serves everything; ``warn`` serves it, logs the advisories and counts
it; ``deny`` answers 403 naming the advisories and the versions that fix
them.  Only zips are judged: ``.info`` and ``go.mod`` stay served, so module
graphs still resolve (``go mod tidy`` and ``go list -m all`` work, and the go
command says which module it could not download and why).  The policy applies
to the modules matching ``VulnPolicyPatterns`` (GOPRIVATE syntax; none: every
module), minus the advisories listed in ``VulnPolicyIgnore`` (by id or alias:
risks an organisation accepted).  Without a copy of the database there is
nothing to judge by: everything is served, and /readyz says so.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger

from athens.policy import match_patterns
from athens.vulndb.database import VulnDatabase
from athens.vulndb.osv import Finding

log = Logger()

MODES = ("off", "warn", "deny")


class Denied(Exception):
    """The zip of a flagged version under ``deny``; the message names the advisories and fixes."""


@attrs.define
class VulnPolicy:
    """``VulnPolicy`` with its patterns and accepted advisories, judging by the copy in service."""

    mode: str
    database: VulnDatabase
    patterns: tuple[str, ...] = ()
    ignore: frozenset[str] = frozenset()
    metrics: Any = None

    def findings(self, module: str, version: str) -> list[Finding]:
        """The advisories the policy acts on for ``module@version``; none when it is off or does not apply."""
        snapshot = self.database.snapshot
        if self.mode == "off" or snapshot is None:
            return []
        if self.patterns and not match_patterns(",".join(self.patterns), module):
            return []
        return [f for f in snapshot.advisories.affecting(module, version)
                if f.id not in self.ignore and not self.ignore.intersection(f.aliases)]

    def flags(self, module: str, version: str) -> bool:
        """Whether the policy acts on this zip (the hit path must not remember it: each download is judged)."""
        return bool(self.findings(module, version))

    def check(self, module: str, version: str) -> None:
        """Judge a download of the zip: logged and counted when flagged; raises :class:`Denied` under deny."""
        found = self.findings(module, version)
        if not found:
            return
        advisories = ", ".join(str(f) for f in found)
        if self.metrics is not None:
            self.metrics.vuln_policy.labels(self.mode).inc()
        log.warn("{module}@{version} has known vulnerabilities: {advisories}; {what} (VulnPolicy {mode})",
                 module=module, version=version, advisories=advisories, mode=self.mode,
                 what="refused" if self.mode == "deny" else "served", vulns=[f.id for f in found])
        if self.mode == "deny":
            raise Denied(f"{module}@{version} has known vulnerabilities: {advisories} (VulnPolicy deny; "
                         f".info and .mod stay served)")
