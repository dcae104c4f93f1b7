"""Request ids: the client's ``X-Request-Id`` when it is sane, else a new one that costs no system call."""

from __future__ import annotations

import itertools
import re
import secrets

_SANE = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
#: Unique per process (random), then a counter: 16 hex digits, like the ids before it.
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(secrets.randbelow(1 << 24))


def request_id(given: bytes | None) -> str:
    if given and _SANE.match(given):
        return given.decode("ascii")
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFF:08x}"
