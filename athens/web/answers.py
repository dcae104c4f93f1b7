"""
The answers the hit path replays: what the full path gave with 200, by request target.

Only the protocol handlers add to it (:meth:`Answers.remember`), after Klein
decided the answer; the hit path reads it.  Bounded in bytes (a zip on disk
is remembered as its file name), and cleared whenever a version is deleted
anywhere (the service polls the store's deletions token).
"""

from __future__ import annotations

import os
import time

import attrs
from twisted.web.server import version as server_version

SERVER = b"Server: %s\r\n" % server_version
#: Seconds a list or ``@latest`` is replayed before the full path (and the list cache) answers again.
LIST_REPLAY = 5.0
#: Seconds between checks that a remembered zip is still linked (one ``fstat`` costs as much as a tenth of a hit).
LINK_CHECK = 0.05


@attrs.frozen
class Answer:
    """A 200 the full path gave: headers after the status line (no Date, id or Connection), then the body or file."""

    headers: bytes
    size: int
    endpoint: str
    body: bytes = b""
    #: A local file holding exactly the body (a zip on disk): sent with sendfile.
    path: str = ""
    module: str = ""
    version: str = ""
    #: ``time.monotonic()`` after which the full path must answer again (lists); versions never change.
    expires: float = float("inf")


@attrs.define
class OpenFile:
    """A remembered zip, open: hits send from this one descriptor (sendfile takes an offset), closed when unused."""

    fd: int
    users: int = 0
    #: ``time.monotonic()`` of the last check that the file is still linked.
    checked: float = 0.0
    #: Forgotten while in use: the last :meth:`Answers.release` closes it.
    dropped: bool = False


@attrs.define
class Answers:
    """Remembered answers by request target, bounded in bytes; cleared whenever a version is deleted."""

    max_bytes: int = 64 << 20
    #: Zip files kept open (no path walk per hit), the oldest closed beyond this.
    max_files: int = 256
    _entries: dict[bytes, Answer] = attrs.field(factory=dict)
    _size: int = 0
    _files: dict[str, OpenFile] = attrs.field(factory=dict)

    def get(self, target: bytes) -> Answer | None:
        return self._entries.get(target)

    def open(self, path: str, now: float) -> OpenFile:
        """
        A remembered file for one answer, until :meth:`release`; OSError once it is deleted (storage renames a
        version away, then removes it), noticed within :data:`LINK_CHECK` seconds.
        """
        file = self._files.get(path)
        if file is None:
            file = self._files[path] = OpenFile(os.open(path, os.O_RDONLY | os.O_CLOEXEC), checked=now)
            while len(self._files) > self.max_files:
                self._close(next(iter(self._files)))
        elif now - file.checked > LINK_CHECK:
            file.checked = now
            if os.fstat(file.fd).st_nlink == 0:
                self._close(path)
                raise FileNotFoundError(path)
        file.users += 1
        return file

    @staticmethod
    def release(file: OpenFile) -> None:
        file.users -= 1
        if file.dropped and not file.users:
            os.close(file.fd)

    def _close(self, path: str) -> None:
        file = self._files.pop(path, None)
        if file is not None:
            file.dropped = True
            if not file.users:
                os.close(file.fd)

    def remember(self, target: bytes, content_type: bytes, endpoint: str, body: bytes = b"", path: str = "",
                 size: int = 0, module: str = "", version: str = "", ttl: float | None = None,
                 extra: bytes = b"") -> None:
        """``extra``: more header lines, each ending in CRLF (the caching headers, computed once here)."""
        size = size if path else len(body)
        if len(body) > self.max_bytes // 64:
            return
        headers = b"Content-Type: %s\r\nContent-Length: %d\r\n%s%s" % (content_type, size, SERVER, extra)
        expires = time.monotonic() + ttl if ttl is not None else float("inf")
        self.forget(target)
        self._entries[target] = Answer(headers, size, endpoint, body, path, module, version, expires)
        self._size += len(body) + len(target) + len(headers) + 100
        while self._size > self.max_bytes:  # oldest first: dicts keep insertion order
            self.forget(next(iter(self._entries)))

    def forget(self, target: bytes) -> None:
        old = self._entries.pop(target, None)
        if old is not None:
            self._size -= len(old.body) + len(target) + len(old.headers) + 100
            self._close(old.path)  # (another target naming the same file opens it again)

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0
        for path in list(self._files):
            self._close(path)

    def __len__(self) -> int:
        return len(self._entries)
