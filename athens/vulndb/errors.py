"""What goes wrong with the vulnerability database: one base, a class per cause."""

from __future__ import annotations


class VulnDBError(Exception):
    """The vulnerability database could not be read, copied or stored."""


class InvalidDatabase(VulnDBError, ValueError):
    """What was read (an archive, an index, an entry) is not a Go vulnerability database; the copy is refused."""


class UpstreamFailed(VulnDBError):
    """The upstream database could not be reached, or answered something other than the database."""
