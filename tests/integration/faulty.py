"""In-process doubles for the backend fault tests: a backend that can be blackholed, one that
flaps, a client that watches how its stream ends, and health-check endpoints that record
every outcome.

All run on the test's reactor, next to the in-process ddiscover of the test, so the test can
read the checker's state at the moment something happens.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import cast

import attrs
from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTCP,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from zope.interface import implementer

from ddiscover.catalog import Address
from ddiscover.health.probe import EndpointFactory
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure
from tests.integration.backends import GreeterFactory


def _listen(port: int, name: str, backlog: int) -> IListeningPort:
    tcp = cast(IReactorTCP, reactor)
    return tcp.listenTCP(port, GreeterFactory(name), backlog=backlog, interface="127.0.0.1")


def _port_number(port: IListeningPort) -> int:
    host = port.getHost()
    assert isinstance(host, IPv4Address)
    return host.port


class BlackholeBackend:
    """A greeting backend with a listen backlog of 0 that :meth:`blackhole` turns into a hole.

    Blackholing stops accepting and fills the kernel's accept queue with connections of our
    own, so further SYNs are dropped and connects time out, as behind a firewall that drops.
    """

    def __init__(self, name: str) -> None:
        self.port = _listen(0, name, backlog=0)
        self.address = f"127.0.0.1:{_port_number(self.port)}"
        self._fillers: list[socket.socket] = []

    async def blackhole(self) -> None:
        """Stop accepting and fill the accept queue until a probe connect times out."""
        producer = IPushProducer(self.port)
        producer.pauseProducing()
        await deferToThread(self._fill)

    def _fill(self) -> None:
        host, _, port = self.address.rpartition(":")
        while True:
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect((host, int(port)))
            except TimeoutError:
                probe.close()
                return
            self._fillers.append(probe)

    async def stop(self) -> None:
        """Close the filler connections and the port."""
        for filler in self._fillers:
            filler.close()
        await defer.maybeDeferred(self.port.stopListening)


class FlappingBackend:
    """A greeting backend on a fixed port whose :meth:`toggle` stops or resumes listening."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._port: IListeningPort | None = _listen(0, name, backlog=50)
        self.number = _port_number(self._port)
        self.address = f"127.0.0.1:{self.number}"

    async def toggle(self) -> None:
        """Close the listening port if open (new connects are refused), else open it again."""
        if self._port is None:
            self._port = _listen(self.number, self._name, backlog=50)
        else:
            port, self._port = self._port, None
            await defer.maybeDeferred(port.stopListening)

    async def stop(self) -> None:
        """Close the listening port if it is open."""
        if self._port is not None:
            await self.toggle()


class WatchedStream(protocol.Protocol):
    """A client connection that counts what it receives and records how and when it ended."""

    def __init__(self) -> None:
        self.received = 0
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.ended_at = 0.0
        self.reason: Failure | None = None

    @classmethod
    async def open(cls, port: int, request: bytes) -> WatchedStream:
        """Connect to ``port`` on loopback and send ``request``."""
        stream = cls()
        endpoint = TCP4ClientEndpoint(cast(IReactorTCP, reactor), "127.0.0.1", port)
        await connectProtocol(endpoint, stream)
        cast(ITCPTransport, stream.transport).write(request)
        return stream

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.ended_at = time.monotonic()
        self.reason = reason
        self.ended.callback(None)


@attrs.frozen
class Outcome:
    """One counted connect to a backend: a health check or a failed proxied connect."""

    address: Address
    status: CheckStatus
    check: bool


@implementer(IStreamClientEndpoint)
@attrs.define
class _RecordingEndpoint:
    _endpoint: IStreamClientEndpoint
    _record: Callable[[CheckStatus], None]

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        connecting: defer.Deferred[IProtocol] = self._endpoint.connect(factory)

        def succeeded(connected: IProtocol) -> IProtocol:
            self._record(CheckStatus.L4OK)
            return connected

        def failed(failure: Failure) -> Failure:
            self._record(classify_failure(failure).status)
            return failure

        return connecting.addCallbacks(succeeded, failed)


@attrs.define
class OutcomeLog:
    """Every health-check outcome and every reported proxied connect failure, in order.

    :meth:`endpoints` wraps the checker's endpoint factory; :meth:`reporting` wraps
    ``HealthChecker.report``.  Both record synchronously, just before the checker counts the
    same result, so the log is in the order the checker counted.
    """

    outcomes: list[Outcome] = attrs.Factory(list)

    def endpoints(self, real: EndpointFactory) -> EndpointFactory:
        """``real``, recording the outcome of every check it connects."""

        def endpoint_for(address: Address, timeout: float) -> IStreamClientEndpoint:
            def record(status: CheckStatus) -> None:
                self.outcomes.append(Outcome(address, status, check=True))

            return _RecordingEndpoint(real(address, timeout), record)

        return endpoint_for

    def reporting(
        self, report: Callable[[Address, CheckResult], None]
    ) -> Callable[[Address, CheckResult], None]:
        """``report``, recording every result it will count."""

        def recorded(address: Address, result: CheckResult) -> None:
            if not result.ok and result.counts:
                self.outcomes.append(Outcome(address, result.status, check=False))
            report(address, result)

        return recorded

    def of(self, address: Address) -> list[Outcome]:
        """The outcomes of ``address``, in order."""
        return [outcome for outcome in self.outcomes if outcome.address == address]


def transitions_by_rise_fall(outcomes: list[Outcome], rise: int, fall: int) -> list[bool]:
    """The UP (True) / DOWN (False) changes that rise/fall must make of these outcomes.

    Written from the rule, not from the checker's counter: a new backend is UP after its first
    success; an UP backend goes DOWN after ``fall`` failures in a row; a DOWN backend comes UP
    after ``rise`` successes in a row.
    """
    up, streak, changes = False, rise - 1, []
    for outcome in outcomes:
        if (outcome.status is CheckStatus.L4OK) == up:
            streak = 0
            continue
        streak += 1
        if streak == (fall if up else rise):
            up, streak = not up, 0
            changes.append(up)
    return changes
