"""Tests of the proxy, and the fakes they share.

The fakes record what the code under test did rather than mocking calls: a health view with
a set of UP addresses and a list of reports, a TCP transport that remembers half-closes,
aborts, socket options and the order of producer and close calls, and a memory reactor
whose ports can be busy, paused and closed a reactor turn later, as ``tcp.Port`` closes them.
"""

# The fakes implement Twisted's camelCase interfaces.

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

import attrs
from hyperlink import URL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IPushProducer,
)
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from ddiscover.catalog import Address, Backend
from ddiscover.config import Config
from ddiscover.health.result import CheckResult
from ddiscover.health.state import discovered
from ddiscover.modes.tcp import Session
from ddiscover.proxy.balancer import HealthSubscriber


def make_config(**overrides: object) -> Config:
    """A Config with a dummy etcd URL and the given fields changed."""
    return Config(etcd=(URL.from_text("http://127.0.0.1:2379"),), **overrides)  # type: ignore[arg-type]


def backend(name: str, port: int, host: str = "10.0.0.1") -> Backend:
    """A backend called ``name`` at ``host:port``."""
    return Backend(name, Address(host, port))


def closed_port() -> int:
    """A loopback port nothing listens on."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    number = int(probe.getsockname()[1])
    probe.close()
    return number


def blackhole(test: TestCase) -> int:
    """A loopback port whose connects are never answered, closed in ``test``'s cleanup.

    One unaccepted connection fills a ``listen(0)`` queue; further SYNs are dropped.
    """
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    test.addCleanup(hole.close)
    filler = socket.create_connection(hole.getsockname())
    test.addCleanup(filler.close)
    return int(hole.getsockname()[1])


class FakeHealth:
    """A health view: UP is membership of ``up``, pending of ``pending``; reports are kept in
    order.  :meth:`change` moves an address and tells the subscribers, as the checker does."""

    def __init__(self, up: Iterable[Address] = (), pending: Iterable[Address] = ()) -> None:
        self.up = set(up)
        self.pending = set(pending)
        self.reports: list[tuple[Address, CheckResult]] = []
        self.subscribers: list[HealthSubscriber] = []

    def is_up(self, address: Address) -> bool:
        return address in self.up

    def is_pending(self, address: Address) -> bool:
        return address in self.pending

    def subscribe(self, callback: HealthSubscriber) -> None:
        self.subscribers.append(callback)

    def change(self, address: Address, *, up: bool) -> None:
        """``address`` had a check result: it is no longer pending, and UP or not."""
        old = discovered(1, 1, 0.0)
        new = attrs.evolve(old, health=1 if up else 0, checked=True)
        self.pending.discard(address)
        (self.up.add if up else self.up.discard)(address)
        for callback in list(self.subscribers):
            callback(address, old, new)

    def report(self, address: Address, result: CheckResult) -> None:
        self.reports.append((address, result))


class RecordingTracker:
    """A session tracker that keeps the open sessions and counts closes."""

    def __init__(self) -> None:
        self.open: list[Session] = []
        self.closed: list[Session] = []

    def session_opened(self, session: Session) -> None:
        self.open.append(session)

    def session_closed(self, session: Session) -> None:
        self.open.remove(session)
        self.closed.append(session)


class FakeTCPTransport(StringTransport):
    """A StringTransport with the TCP extras the proxy uses.

    ``calls`` lists the producer and close calls in order.  ``abortConnection`` delivers
    ``connectionLost(ConnectionAborted)`` on the next turn of ``clock``, exactly as
    ``tcp.Connection.abortConnection`` does.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.protocol: IProtocol | None = None
        self.write_closed = False
        self.aborted = False
        self.nodelay: bool | None = None
        self.keepalive: bool | None = None
        self.calls: list[str] = []

    def connect(self, protocol: IProtocol) -> None:
        """Attach ``protocol`` and call its ``makeConnection``."""
        self.protocol = protocol
        protocol.makeConnection(self)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.calls.append("registerProducer")
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")
        super().unregisterProducer()

    def pauseProducing(self) -> None:
        self.calls.append("pauseProducing")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.calls.append("resumeProducing")
        super().resumeProducing()

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        super().loseConnection()

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")
        self.write_closed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keepalive = enabled

    def abortConnection(self) -> None:
        assert self.protocol is not None
        if self.aborted:
            return
        self.aborted = True
        self.calls.append("abortConnection")
        self.disconnected = True
        self.disconnecting = True
        self.clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionAborted()))

    def finish_close(self) -> None:
        """Deliver ``connectionLost(ConnectionDone)``, as a completed ``loseConnection`` does."""
        assert self.protocol is not None and self.disconnecting
        self.connected = False
        self.protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IListeningPort, IPushProducer)
class FakePort:
    """A listening port that can be paused and that releases its number a turn after
    ``stopListening``, like ``tcp.Port``."""

    def __init__(self, clock: Clock, number: int, interface: str) -> None:
        self.clock = clock
        self.number = number
        self.interface = interface
        self.bound = True
        self.reading = True

    def startListening(self) -> None:
        """Nothing to do: bound at creation."""

    def stopListening(self) -> Deferred[None]:
        self.reading = False
        return deferLater(self.clock, 0, self._release)

    def _release(self) -> None:
        self.bound = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", self.interface or "0.0.0.0", self.number)

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = self.bound

    def stopProducing(self) -> None:
        self.stopListening()


class PortsReactor(MemoryReactorClock):
    """A memory reactor whose ``listenTCP`` returns :class:`FakePort` and can fail.

    Ports in ``busy`` raise ``CannotListenError`` with the given error, and so does a number
    still bound by an earlier port whose close has not completed.  Ports in ``failing``
    raise their error as it is, as ``tcp.Port`` does when ``listen()`` itself fails.
    """

    def __init__(self) -> None:
        super().__init__()
        self.busy: dict[int, OSError] = {}
        self.failing: dict[int, OSError] = {}
        self.ports: dict[int, FakePort] = {}

    def listenTCP(self, port, factory, backlog=50, interface=""):
        earlier = self.ports.get(port)
        if earlier is not None and earlier.bound:
            raise CannotListenError(
                interface, port, OSError(errno.EADDRINUSE, "Address already in use")
            )
        if port in self.busy:
            raise CannotListenError(interface, port, self.busy[port])
        if port in self.failing:
            raise self.failing[port]
        self.tcpServers.append((port, factory, backlog, interface))
        fake = self.ports[port] = FakePort(self, port, interface)
        return fake
