"""
Write an async stream of chunks to a request, with backpressure.

The request's transport pauses us when its buffer is full; we await until it
resumes, so a slow client holds at most a buffer's worth of a zip in memory.
"""

from __future__ import annotations

from typing import AsyncIterable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest
from zope.interface import implementer


@implementer(IPushProducer)
class _Flow:
    def __init__(self) -> None:
        self.paused: Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self.paused is None:
            self.paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()


async def write_stream(request: IRequest, chunks: AsyncIterable[bytes]) -> int:
    """Write every chunk; return the bytes written. Raises ConnectionDone if the client left."""
    flow = _Flow()
    request.registerProducer(flow, True)
    sent = 0
    try:
        async for chunk in chunks:
            if flow.stopped:
                raise ConnectionDone("client went away")
            request.write(chunk)
            sent += len(chunk)
            if flow.paused is not None:
                await flow.paused
        if flow.stopped:
            raise ConnectionDone("client went away")
        return sent
    finally:
        # Also after a stop: the connection may not be marked lost yet, and a request finished with its
        # producer still registered is a logged RuntimeError (Twisted's).
        if not getattr(request, "_disconnected", False):
            request.unregisterProducer()
