"""The proxy's own TCP transports: where ddiscover leaves Twisted's generic TCP code, and why.

Twisted's ``tcp.Server`` and ``tcp.Client`` serve every kind of protocol; a proxy pays for
that generality on every connection and every read.  The profile and the measurements behind
each change are in ``docs/performance.md``; in short, on one core against haproxy:

* **Write-through** (:meth:`FastConnection.write`).  Twisted's ``write`` always buffers and
  waits for the reactor to say the socket is writable: an ``epoll_ctl`` to start watching, a
  reactor turn, a ``send()``, an ``epoll_ctl`` to stop.  When nothing is buffered, sending at
  once is the same bytes in the same order, minus that round trip.  Keep-alive requests went
  from 0.69x to 1.14x of haproxy, p99 latency from 1.35x to 0.89x.
* **256 KiB reads** (:meth:`FastConnection.doRead`).  Twisted reads ``bufferSize`` (64 KiB)
  per ``recv()``; a bulk stream then costs the *receiver* four wake-ups where one would do.
  ``bufferSize`` itself stays 64 KiB, because it is also the write-buffer size past which the
  peer's reads are paused: raising it instead cost half the bulk throughput and let a slow
  reader grow the proxy by 1 MB.
* **Accepted clients are created not reading** (:class:`ProxyPort`, :class:`ClientTransport`).
  ``tcp.Server`` starts reading in its constructor, and the session must pause the client at
  once until its backend is connected: an epoll add, delete and add again per connection.
* **Accept batches that fit under maxconn** (:meth:`ProxyPort.doRead`).  ``tcp.Port`` accepts
  up to ``numberAccepts`` clients per wake-up (100, growing by 20 after each full batch)
  before pausing the port can act, which let 1,280 connections in under ``--maxconn 1000``.
  Each batch is cut to the room left when it starts: one call per wake-up, not per accept.
* **A lean connect to IP literals** (:class:`LeanConnect`).  ``connectTCP`` builds a
  ``Connector`` and a ``Client``, checks the host twice for an IP literal, waits a reactor turn,
  goes through a Deferred for the "resolution", calls ``connect()`` twice and watches the
  socket for both reading and writing.  This does ``socket()``, ``connect()``, watches for
  writability, reads ``SO_ERROR`` and hands the socket to a :class:`BackendTransport`.
  Failures are reported with the exceptions Twisted uses, so a failed connect is classified
  exactly as before.

Together with freeing sessions without the cycle collector (see ``Session._finish`` and
:func:`ddiscover.process.freeze_startup_objects`), new connections per second went from 0.42x
to 0.47x of haproxy and their p99 latency from 31.7 to 10.5 ms.

All of this needs a real POSIX reactor (epoll, poll or select: ``PosixReactorBase``).
:func:`listen` and :func:`connect` fall back to ``listenTCP`` and ``connectTCP`` on any other
reactor (``MemoryReactor`` in unit tests) and for hostnames; the forwarding code is the same
either way.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from functools import lru_cache
from os import strerror
from typing import TYPE_CHECKING, cast

from twisted.internet import address, error, tcp
from twisted.internet.interfaces import (
    IConnector,
    IListeningPort,
    IProtocol,
    IReactorFDSet,
    IReactorTime,
    IWriteDescriptor,
)
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.failure import Failure
from zope.interface import implementer

from ddiscover.proxy.reactor import ProxyReactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall
    from twisted.internet.protocol import ClientFactory, ServerFactory

#: Bytes per ``recv()`` on proxied sockets (Twisted's default is ``bufferSize``, 64 KiB).
READ_SIZE = 256 * 1024

#: ``connect()`` results that mean "in progress": wait for writability.
_IN_PROGRESS = frozenset({0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY})


class FDReactor(IReactorFDSet, IReactorTime):
    """What the transports here need: a reactor that watches sockets and keeps time."""


def _posix(reactor: ProxyReactor) -> FDReactor | None:
    """``reactor`` if it is a real POSIX reactor, else None.

    Not ``IReactorFDSet.providedBy``: ``MemoryReactor`` provides that too, and unit tests on
    it must see the ``listenTCP`` and ``connectTCP`` calls they check.
    """
    return cast(FDReactor, reactor) if isinstance(reactor, PosixReactorBase) else None


class FastConnection(tcp.Connection):
    """A TCP transport that sends at once when it can and reads :data:`READ_SIZE` at a time."""

    def doRead(self) -> error.ConnectionLost | error.ConnectionDone | None:
        """``tcp.Connection.doRead`` with :data:`READ_SIZE` per ``recv()``."""
        try:
            data = self.socket.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return CONNECTION_LOST
        if not data:
            return CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None

    def write(self, data: bytes) -> None:
        """Send ``data`` now if nothing is buffered; buffer what the kernel does not take.

        Whatever is not sent here goes through Twisted's ``write``, which buffers it, pauses
        the registered producer past ``bufferSize`` and waits for writability exactly as
        before.  Errors are left to it as well: its ``doWrite`` meets the same error on its
        own ``send()`` and reports the connection lost the usual way.
        """
        if (
            self._tempDataLen
            or self.dataBuffer
            or not self.connected
            or self.disconnecting
            or self._writeDisconnecting
            or self._writeDisconnected
        ):
            super().write(data)
            return
        try:
            sent = self.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            super().write(data)
            return
        if sent < len(data):
            super().write(data[sent:])


class ClientTransport(FastConnection, tcp.Server):
    """An accepted client socket, created not reading: the session starts it once its backend
    is connected.  Its log prefix is a constant instead of a string formatted per connection."""

    logstr = "ddiscover,client"

    def __init__(  # noqa: PLR0917 (tcp.Port.doRead passes these positionally)
        self,
        sock: socket.socket,
        protocol: IProtocol,
        client: tuple[object, ...],
        server: tcp.Port,
        sessionno: int,
        reactor: IReactorFDSet,
    ) -> None:
        # tcp.Server.__init__ without its startReading() and its per-connection strings.
        tcp.Connection.__init__(self, sock, protocol, reactor)
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.connected = 1

    def __repr__(self) -> str:
        return f"<{type(self.protocol).__name__} #{self.sessionno}>"


class ProxyPort(tcp.Port):
    """A listening port whose accepted connections are :class:`ClientTransport`\\ s, accepting
    no more per wake-up than ``room()`` (the connections still allowed under maxconn)."""

    transport = ClientTransport

    def __init__(  # noqa: PLR0917 (tcp.Port's own positional order, plus room)
        self,
        port: int,
        factory: ServerFactory,
        backlog: int,
        interface: str,
        reactor: FDReactor,
        room: Callable[[], int],
    ) -> None:
        super().__init__(port, factory, backlog, interface, reactor)
        self._room = room

    def doRead(self) -> None:
        """Accept a batch of at most ``room()`` clients (none if there is no room)."""
        room = self._room()
        if room <= 0:
            return
        self.numberAccepts = min(self.numberAccepts, room)
        super().doRead()


class BackendTransport(FastConnection):
    """A connected backend socket: what ``tcp.Client`` is once connected, without a connector."""

    logstr = "ddiscover,backend"

    def __init__(
        self,
        sock: socket.socket,
        protocol: IProtocol,
        reactor: FDReactor,
        peer: address.IPv4Address | address.IPv6Address,
    ) -> None:
        super().__init__(sock, protocol, reactor)
        self._peer = peer
        self.connected = 1

    def getPeer(self) -> address.IPv4Address | address.IPv6Address:
        return self._peer

    def getHost(self) -> address.IPv4Address | address.IPv6Address:
        return type(self._peer)("TCP", *self.socket.getsockname()[:2])

    def __repr__(self) -> str:
        return f"<{type(self.protocol).__name__} to {self._peer.host}:{self._peer.port}>"


@lru_cache(maxsize=32768)
def _destination(host: str, port: int) -> address.IPv4Address | address.IPv6Address | None:
    """The address to connect to if ``host`` is an IP literal, else None (a hostname, left to
    ``connectTCP``, which resolves it).  Cached: backends are reconnected to often, by checks
    every interval.  The cache holds several times the 5,000 backends of the scale scenario:
    at 4,096 entries the checks cycling over them missed every time (7.5 % of CPU there)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    kind = address.IPv6Address if ip.version == 6 else address.IPv4Address
    return kind("TCP", host, port)


@implementer(IConnector, IWriteDescriptor)
class LeanConnect:
    """A non-blocking ``connect()`` to an IP literal, watched by the reactor until it completes.

    On success the factory's protocol is connected to a :class:`BackendTransport`.  On failure
    the factory's ``clientConnectionFailed`` gets what ``connectTCP`` would have given it:
    ``ConnectBindError`` when no socket could be made (EMFILE), the ``getConnectError`` of the
    errno (``ConnectionRefusedError`` and so on), ``TimeoutError`` after ``timeout`` seconds,
    ``UserError`` after :meth:`stopConnecting`.  A failure found while connecting is reported
    on the next reactor turn, never from inside :meth:`connect`.
    """

    def __init__(
        self,
        reactor: FDReactor,
        destination: address.IPv4Address | address.IPv6Address,
        factory: ClientFactory,
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self._destination = destination
        self._factory = factory
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._fd = -1
        self._timer: IDelayedCall | None = None
        self.transport: BackendTransport | None = None

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "ddiscover,connect"

    def connect(self) -> None:
        """Start connecting (again, after a failure)."""
        destination = self._destination
        ipv6 = isinstance(destination, address.IPv6Address)
        try:
            sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            self._timer = self._reactor.callLater(
                0, self._report, error.ConnectBindError(e.errno, e.strerror)
            )
            return
        sock.setblocking(False)
        self._sock, self._fd = sock, sock.fileno()
        code = sock.connect_ex((destination.host, destination.port))
        if code not in _IN_PROGRESS:
            self._timer = self._reactor.callLater(0, self._fail, self._connect_error(code))
            return
        self._timer = self._reactor.callLater(self._timeout, self._timed_out)
        self._reactor.addWriter(self)

    def doWrite(self) -> None:
        """Writable: the connect has completed one way or the other."""
        sock = self._sock
        assert sock is not None, "a finished connect is no longer watched"
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(self._connect_error(code))
            return
        self._stop_watching()
        self._sock, self._fd = None, -1
        protocol = self._factory.buildProtocol(self._destination)
        if protocol is None:
            sock.close()
            return
        transport = BackendTransport(sock, protocol, self._reactor, self._destination)
        self.transport = transport
        transport.startReading()
        protocol.makeConnection(transport)

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw an error or hangup on the socket: report the connect's errno."""
        sock = self._sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock is not None else 0
        self._fail(self._connect_error(code) if code else error.ConnectError(string=str(reason)))

    def local_end(self) -> tuple[str, int] | None:
        """The local ``(host, port)`` of the connect in progress (the kernel picks it in
        ``connect()``), or ``None`` once it is over."""
        sock = self._sock
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    def stopConnecting(self) -> None:
        """Give up on a connect in progress; reported as Twisted reports it, a ``UserError``."""
        if self._sock is not None:
            self._fail(error.UserError())

    def disconnect(self) -> None:
        """Stop connecting, or close the connection if it was made."""
        if self.transport is not None:
            self.transport.loseConnection()
        else:
            self.stopConnecting()

    def getDestination(self) -> address.IPv4Address | address.IPv6Address:
        return self._destination

    def _timed_out(self) -> None:
        self._fail(error.TimeoutError())

    def _connect_error(self, code: int) -> error.ConnectError:
        return error.getConnectError((code, strerror(code)))

    def _stop_watching(self) -> None:
        self._reactor.removeWriter(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail(self, reason: Exception) -> None:
        if self._sock is None:
            return
        self._stop_watching()
        self._sock.close()
        self._sock, self._fd = None, -1
        self._report(reason)

    def _report(self, reason: Exception) -> None:
        self._timer = None
        self._factory.clientConnectionFailed(self, Failure(reason))


def listen(  # noqa: PLR0917 (listenTCP's arguments, plus room)
    reactor: ProxyReactor,
    port: int,
    factory: ServerFactory,
    backlog: int,
    interface: str,
    room: Callable[[], int],
) -> IListeningPort:
    """Listen like ``listenTCP``, with :class:`ProxyPort` on a POSIX reactor.

    ``room`` is only heeded by a :class:`ProxyPort`; other ports accept in their own batches.
    """
    posix = _posix(reactor)
    if posix is not None:
        listening = ProxyPort(port, factory, backlog, interface, posix, room)
        listening.startListening()
        return listening
    return reactor.listenTCP(port, factory, backlog=backlog, interface=interface)


def connect(
    reactor: ProxyReactor, host: str, port: int, factory: ClientFactory, timeout: float
) -> IConnector:
    """Connect like ``connectTCP``, with :class:`LeanConnect` to IP literals on a POSIX reactor."""
    posix = _posix(reactor)
    destination = _destination(host, port) if posix is not None else None
    if posix is None or destination is None:
        return reactor.connectTCP(host, port, factory, timeout=timeout)
    connector = LeanConnect(posix, destination, factory, timeout)
    connector.connect()
    return connector
