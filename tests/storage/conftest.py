from __future__ import annotations

import pytest

from athens.storage.interface import IStorage
from tests.storage.backends import BACKENDS


@pytest.fixture(params=sorted(BACKENDS))
def storage(request, tmp_path):
    gen = BACKENDS[request.param](request, tmp_path)
    store = next(gen)
    assert IStorage.providedBy(store)
    yield store
    gen.close()
