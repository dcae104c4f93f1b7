"""
Zero-copy answers: headers written at once, then a file sent with sendfile(2).

Twisted's transports queue every write until the next poll; for a plain TCP
(or Unix) socket with nothing queued, :func:`send` writes at once, and
:class:`SendFile` moves a file's bytes from the page cache to the socket
without them passing through Python, pausing when the socket is full and
taking turns with other connections on large files.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Callable

from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer

#: Bytes one turn sends before the reactor runs other connections.
TURN = 4 << 20


def send(transport: Any, data: bytes, more: bool = False) -> None:
    """
    Write at once when nothing is queued before it: Twisted's ``write``
    would queue the bytes and wait for the next poll (two more system calls
    a hit); what the socket does not take is queued as usual.  ``more``: a
    file follows (TCP sends the headers with its first bytes, as nginx's
    ``tcp_nopush`` does).
    """
    if queued(transport) or not transport.connected or transport.disconnecting:
        transport.write(data)
        return
    flags = socket.MSG_MORE if more and transport.socket.family != socket.AF_UNIX else 0
    try:
        sent = transport.socket.send(data, flags)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)  # the error surfaces through the usual path
        return
    if sent < len(data):
        transport.write(data[sent:])


def queued(transport: Any) -> bool:
    """Whether Twisted holds bytes for this socket that have not been sent."""
    return bool(transport.dataBuffer) or bool(transport._tempDataLen)


@implementer(IPushProducer)
class SendFile:
    """
    ``size`` bytes of ``fd`` to ``transport``'s socket, after what the
    transport has queued.  ``consumer`` is the transport's producer (twisted.web's
    HTTPChannel), which passes the transport's pause and resume calls on to
    whatever it has registered.  ``ended(sent, broken)`` is called once, with
    ``broken`` empty when all went out; the descriptor stays the caller's
    (sendfile is given offsets: it may be shared).
    """

    def __init__(self, transport: Any, consumer: IConsumer, fd: int, size: int,
                 ended: Callable[[int, str], None]) -> None:
        self.transport, self.consumer, self.fd, self.size, self.ended = transport, consumer, fd, size, ended
        self.offset = 0
        self.stopped = False
        self.registered = False
        self.saved_timeout: Any = None

    def start(self) -> None:
        if queued(self.transport):
            self._wait()
        else:
            self.resumeProducing()  # the headers went out: send at once; most zips go in one call

    def _wait(self) -> None:
        """Be called again (resumeProducing) when Twisted's buffer is empty and the socket writable."""
        if not self.registered:
            self.registered = True
            self.saved_timeout = self.consumer.setTimeout(None)  # as HTTPChannel does while it answers
            self.consumer.registerProducer(self, True)
        self.transport.producerPaused = True  # the transport resumes a paused streaming producer when drained
        self.transport.startWriting()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        if self.stopped:
            return
        turn = 0
        while self.offset < self.size:
            try:
                n = os.sendfile(self.transport.fileno(), self.fd, self.offset, min(self.size - self.offset, 1 << 20))
            except BlockingIOError:
                self._wait()
                return
            except OSError as e:
                self._end("client left" if e.errno in (errno.EPIPE, errno.ECONNRESET) else f"sendfile: {e.strerror}")
                self.transport.abortConnection()
                return
            if n == 0:
                self._end("the file is shorter than its size")
                self.transport.abortConnection()
                return
            self.offset += n
            turn += n
            if turn >= TURN:
                self._wait()
                return
        self._end("")

    def pauseProducing(self) -> None:  # noqa: N802
        pass  # nothing of ours sits in Twisted's buffer: we only send when it is empty

    def stopProducing(self) -> None:  # noqa: N802
        if not self.stopped:
            self._end("client left")

    def _end(self, broken: str) -> None:
        self.stopped = True
        if self.registered and self.transport.connected and not self.transport.disconnecting:
            self.consumer.unregisterProducer()
            self.consumer.setTimeout(self.saved_timeout)
        self.ended(self.offset, broken)
