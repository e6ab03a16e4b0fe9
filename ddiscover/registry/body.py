"""Reading a response body within a size cap, so a huge or unwanted body is never buffered."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from ddiscover.registry.errors import BodyTooLargeError


class BodyReader(TwistedProtocol):
    """Collects a response body up to ``limit`` bytes into :attr:`done`.

    Cancelling :attr:`done` (directly, or through ``addTimeout``) aborts the connection, which
    is the only way to stop a long-poll whose headers have already arrived.
    """

    def __init__(self, limit: int) -> None:
        self.done: Deferred[bytes] = Deferred(self._abort)
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []

    def _abort(self, _: Deferred[bytes]) -> None:
        IPushProducer(self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done.errback(BodyTooLargeError())
            self._abort(self.done)
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)
