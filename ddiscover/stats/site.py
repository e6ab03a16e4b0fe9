"""The stats port's HTTP server: Twisted's ``Site`` with haproxy's limits on clients.

Three things ``Site`` does not do and the stats port needs, since it shares the process's
descriptors with the proxy:

* a whole request head must arrive within ``request_timeout`` seconds (haproxy's
  ``timeout http-request 10s``); ``Site``'s own timeout is reset by every byte, so a client
  trickling a header line every 5 s was never closed.  Late clients get 408;
* at most ``max_connections`` stats connections at once; one more is answered 503 and closed
  at once, so idle stats clients can never take the descriptors proxied connections need;
* a request line or header too long gets 414 or 431 (any other malformed head 400), then a
  lingering close: ddiscover stops reading, closes its side, and discards what the client
  still sends for a moment, so the client reads the answer instead of a reset.

It also writes no access line per request (``Site`` logs one at info for every hit).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

from ddiscover.proxy.budget import STATS_CONNECTIONS

REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head, as haproxy's ``timeout http-request``."""

MAX_CONNECTIONS = STATS_CONNECTIONS
"""Concurrent stats connections at most: a browser, a scraper and health checks fit easily.
The descriptor budget reserves exactly these (:mod:`ddiscover.proxy.budget`)."""

LINGER = 2.0
"""Seconds a refused client's remaining bytes are read and dropped before the close."""

_PHRASES = {
    400: b"Bad Request",
    408: b"Request Time-out",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _answer(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
        code,
        _PHRASES[code],
    )


class StatsChannel(HTTPChannel):
    """An ``HTTPChannel`` with a deadline on each request head and clean refusals."""

    site: StatsSite
    _linger: IDelayedCall | None = None
    _head_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._head_timer = self.site.clock.callLater(self.site.request_timeout, self._refuse, 408)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None

    def allHeadersReceived(self) -> None:  # noqa: N802
        self._stop_head_timer()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802
        super().requestDone(request)
        if self.persistent and self._linger is None:
            self._start_head_timer()

    def dataReceived(self, data: bytes) -> None:
        if self._linger is None:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        if self._linger is None:
            super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802
        """A line over ``MAX_LENGTH``: 414 for the request line, 431 for a header."""
        self._refuse(414 if getattr(self, "_HTTPChannel__first_line", 0) else 431)

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802
        """Twisted's answer to a malformed head: 431 when it is too big, else 400."""
        self._refuse(431 if self._receivedHeaderSize > self.totalHeadersSize else 400)

    def _refuse(self, code: int) -> None:
        """Answer ``code``, close our side, and drop what the client sends for a moment."""
        if self._linger is not None:
            return
        self._stop_head_timer()
        self.setTimeout(None)
        transport = cast(ITCPTransport, self.transport)
        transport.write(_answer(code))
        self._linger = self.site.clock.callLater(LINGER, transport.abortConnection)
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._stop_head_timer()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self.site.open -= 1
        super().connectionLost(reason)


class _Full(Protocol):
    """What a connection over the cap gets: 503 and a close."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(_answer(503))
        self.transport.loseConnection()


class StatsSite(Site):
    """``Site`` for the stats port, with a request-head deadline and a connection cap."""

    protocol = StatsChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        clock: IReactorTime,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(resource, reactor=clock)
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.open = 0

    def log(self, request: object) -> None:
        """Write no access line: a healthcheck every 10 s and a scrape every 15 s are no news.

        ``Site`` would write one per request to the legacy log at info.
        """

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        if self.open >= self.max_connections:
            return _Full()
        channel = super().buildProtocol(addr)
        if isinstance(channel, StatsChannel):
            channel.site = self
            self.open += 1
        return channel
