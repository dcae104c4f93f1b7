"""Fakes for tests of code that uses storage (shipped, like treq.testing)."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import fail
from zope.interface import implementer

from athens.storage.interface import IStorage
from athens.storage.memory import MemoryStorage


@implementer(IStorage)
@attrs.define
class FaultyStorage:
    """Delegates to ``inner`` except for the methods in ``faults``, which fail with the given error."""

    inner: Any = attrs.field(factory=MemoryStorage)
    faults: dict[str, Exception] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def __getattr__(self, method: str) -> Any:
        if method in self.faults:
            error = self.faults[method]
            return lambda *args, **kwargs: fail(error)
        return getattr(self.inner, method)
