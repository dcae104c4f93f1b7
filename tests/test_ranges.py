"""Byte ranges and entity tags: the parsing and the slicing, against their definitions in RFC 9110."""

from __future__ import annotations

from typing import AsyncIterator

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from athens.web.caching import _matches, version_time, zip_etag
from athens.web.ranges import Unsatisfiable, Window, requested, window_of


@attrs.define
class ChunkedBlob:
    """A Blob whose content comes in the given pieces; ``seekable``: it offers ``chunks_from`` as files do."""

    pieces: list[bytes]
    closed: int = 0

    @property
    def size(self) -> int:
        return sum(map(len, self.pieces))

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for piece in self.pieces:
                yield piece
        finally:
            self.closed += 1


@attrs.define
class SeekableBlob(ChunkedBlob):
    async def chunks_from(self, offset: int) -> AsyncIterator[bytes]:
        data = b"".join(self.pieces)[offset:]
        try:
            for i in range(0, len(data), 7):
                yield data[i:i + 7]
        finally:
            self.closed += 1


def drain(stream: AsyncIterator[bytes]) -> bytes:
    """Run an async iterator that never waits on anything to its end."""
    out: list[bytes] = []

    async def run() -> None:
        async for chunk in stream:
            out.append(chunk)

    coroutine = run()
    with pytest.raises(StopIteration):
        coroutine.send(None)
    return b"".join(out)


pieces = st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=12).filter(lambda p: sum(map(len, p)) > 0)


@given(pieces, st.data(), st.booleans())
def test_a_window_is_exactly_its_slice_however_the_blob_is_chunked(parts, data, seekable):
    blob = (SeekableBlob if seekable else ChunkedBlob)(parts)
    whole = b"".join(parts)
    start = data.draw(st.integers(0, len(whole) - 1))
    end = data.draw(st.integers(start, len(whole) - 1))
    assert drain(window_of(blob, Window(start, end, len(whole)))) == whole[start:end + 1]
    assert blob.closed == 1  # stopped early or not, what the blob holds is released


@given(st.integers(1, 10**6), st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6) | st.none())
def test_one_range_is_read_as_the_rfc_says(size, first, last):
    header = f"bytes={first}-{'' if last is None else last}".encode()
    if last is not None and last < first:
        assert requested(header, size) is None  # invalid: the whole representation
    elif first >= size:
        with pytest.raises(Unsatisfiable):
            requested(header, size)
    else:
        end = size - 1 if last is None else min(last, size - 1)
        assert requested(header, size) == Window(first, end, size)


@given(st.integers(1, 10**6), st.integers(0, 2 * 10**6))
def test_a_suffix_range_is_the_last_bytes(size, suffix):
    if suffix == 0:
        with pytest.raises(Unsatisfiable):
            requested(b"bytes=-%d" % suffix, size)
    else:
        assert requested(b"bytes=-%d" % suffix, size) == Window(max(size - suffix, 0), size - 1, size)


@pytest.mark.parametrize("header", [None, b"bytes=1-2,4-5", b"bytes=-", b"lines=1-2", b"bytes=a-b", b"bytes 1-2",
                                    b"bytes=1-2" + b" " * 300])
def test_what_is_not_one_byte_range_asks_for_the_whole(header):
    assert requested(header, 100) is None


@pytest.mark.parametrize("header, weak, strong", [
    (b'"a"', True, True), (b'W/"a"', True, False), (b'"b", "a"', True, True), (b' "b" ,W/"a" ', True, False),
    (b"*", True, True), (b'"b"', False, False), (b'"a', False, False), (b"", False, False),
])
def test_entity_tag_comparison(header, weak, strong):
    assert _matches(header, b'"a"', weak=True) is weak
    assert _matches(header, b'"a"', weak=False) is strong


def test_a_zip_tag_changes_with_its_info_or_size():
    info = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'
    tag = zip_etag(info, 100)
    assert tag == zip_etag(info, 100) and tag.startswith(b'"') and tag.endswith(b'"')
    assert zip_etag(info, 101) != tag
    assert zip_etag(info.replace(b"05Z", b"06Z"), 100) != tag


@pytest.mark.parametrize("info, expected", [
    (b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}', 1704164645),
    (b'{"Version":"v1.0.0","Time":"2024-01-02T05:04:05.123456789+02:00"}', 1704164645),
    (b'{"Version":"v1.0.0","Time":"2999-01-01T00:00:00Z"}', "now"),  # never later than now
    (b'{"Version":"v1.0.0","Time":"1601-01-01T00:00:00Z"}', None),
    (b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05"}', None),  # no zone: no time
    (b'{"Version":"v1.0.0"}', None), (b'{"Time": 5}', None), (b"not json", None), (b"[]", None), (None, None),
])
def test_the_last_modified_time_of_a_version(info, expected):
    import time

    before = int(time.time())
    got = version_time(info)
    if expected == "now":
        assert got is not None and before <= got <= time.time()
    else:
        assert got == expected
