"""
Athens' ``ValidatorHook``: ask an operator's service whether a module version may be served.

For every request that names a version, the hook gets a POST of
``{"Module": ..., "Version": ...}``: 200 allows it, 403 refuses it (the
client gets 403, the hook's answer is logged as the reason), anything else
is the hook failing (502: nothing is served unchecked).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import treq
from twisted.logger import Logger

from athens.fetch.egress import via
from athens.fetch.interface import OriginError

log = Logger()


class Refused(Exception):
    """The hook said no; the text is its reason."""


@attrs.define
class ValidatorHook:
    url: str
    pool: Any
    reactor: Any
    timeout: float = 30.0

    async def check(self, module: str, version: str) -> None:
        payload = json.dumps({"Module": module, "Version": version}).encode()
        try:
            response = await treq.post(self.url, data=payload, headers={"Content-Type": "application/json"},
                                       **via(self.pool), timeout=self.timeout, reactor=self.reactor)
            body = (await treq.content(response))[:2000]
        except Exception as e:
            raise OriginError(f"the validator hook is unreachable: {e}") from None
        if response.code == 200:
            return
        reason = body.decode("utf-8", "replace").strip()
        if response.code == 403:
            log.warn("validator hook refused {what}: {reason}", what=f"{module}@{version}", reason=reason)
            raise Refused(f"{module}@{version} refused by the validator hook" + (f": {reason}" if reason else ""))
        raise OriginError(f"the validator hook answered {response.code}")
