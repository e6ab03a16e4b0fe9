"""The byte relay between the two sockets of a proxied connection: flow control and closes.

A relay is two :class:`Side`\\ s created together by their session (see
:class:`~ddiscover.modes.tcp.Session`): a :class:`ClientSide` on the accepted socket and a
:class:`BackendSide` on the socket opened to a backend.  Neither side is ever re-pointed at
another peer.  What each side needs of its session is :class:`Pair`.

* **Flow control.**  Each side is registered as the streaming producer of the other side's
  transport, so when one socket's send buffer passes Twisted's ``bufferSize`` (64 KiB) the
  other socket stops reading: ddiscover holds at most about two reads' worth per direction,
  and a slow reader slows the writer down through the kernel's windows instead of through our
  memory.  The side, not its transport, is the producer: pausing and resuming are passed on
  to the transport, but ``stopProducing`` is not (see *Close and reset*).
* **Half-close.**  Both sides provide ``IHalfCloseableProtocol``.  A FIN from one end
  (``readConnectionLost``) becomes ``loseWriteConnection`` on the other socket once what is
  buffered for it is flushed; the opposite direction keeps flowing.  A socket is closed once
  both its directions are done, which Twisted leaves to us.
* **Close and reset.**  ``connectionLost`` with ``ConnectionDone`` (we closed it) closes the
  other socket after its buffer is flushed; any other reason (the remote end reset it, a write
  failed) aborts the other socket, which sends an RST, so a cut stream never looks like a
  complete one to either end.  When a transport is lost, Twisted calls ``stopProducing`` on
  the producer registered with it before our ``connectionLost`` runs; were that producer the
  peer's transport, it would ``loseConnection`` it, which on a half-closed socket closes it
  at once, in order: the reset would reach the other end as a clean close.  A side's
  ``stopProducing`` therefore does nothing, and ``connectionLost`` decides.

Twisted behaviour this relies on, checked against ``twisted/internet/abstract.py`` and
``tcp.py``:

* ``FileDescriptor.doWrite`` resumes a paused producer *instead of* finishing a pending
  ``loseConnection``/``loseWriteConnection``, so a producer still registered on a transport
  can keep it open forever: every producer is unregistered before its consumer is closed.
* A transport whose read side saw EOF is still a producer; if its consumer resumed it, it
  would start reading again and deliver ``readConnectionLost`` a second time.  Unregistering it
  on ``readConnectionLost`` prevents that.
* ``loseConnection`` after a completed ``loseWriteConnection`` calls ``connectionLost``
  synchronously; ``abortConnection`` calls it on the next reactor turn.
* ``abortConnection`` resets: ``Connection.connectionLost`` closes an aborted socket with
  ``SO_LINGER`` (1, 0), so the remote end gets an RST, not a FIN (and anything unsent is
  dropped).  Idle timeouts and the drain deadline therefore reset both ends too.
* A paused transport does not see its peer's FIN or RST until it reads again, which is why a
  client that goes away while its backend connect is in flight is only noticed once the
  connect has finished, and why the session has an idle timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, cast

from twisted.internet import protocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from ddiscover.proxy.counters import Counters


class Transport(Protocol):
    """The parts of a TCP transport (``tcp.Server``/``tcp.Client``) the sides use."""

    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def loseConnection(self) -> None: ...
    def loseWriteConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def setTcpNoDelay(self, enabled: bool) -> None: ...
    def setTcpKeepAlive(self, enabled: bool) -> None: ...
    def getHost(self) -> object: ...


class Pair(Protocol):
    """What the two sides of a relay need of the session that made them."""

    @property
    def client(self) -> ClientSide:
        """The accepted socket's side."""

    @property
    def backend(self) -> BackendSide:
        """The backend socket's side."""

    def start(self) -> None:
        """The client was accepted (and is paused): pick a backend and connect."""

    def backend_connected(self) -> None:
        """The backend socket is connected: wire the sides and start reading the client."""

    def count_reset(self, *, client: bool) -> None:
        """The client (``client=True``) or the backend reset its socket."""

    def side_lost(self, side: Side) -> None:
        """``side``'s socket is closed."""


@implementer(IHalfCloseableProtocol, IPushProducer)
class Side(protocol.Protocol):
    """One socket of a proxied connection: its half-close state and how its close propagates.

    ``feeding`` says whether this side is registered as the producer of the peer's transport
    (this side's reads feed the peer's writes).
    """

    _is_client: ClassVar[bool]

    # Set when the backend is connected (see wire); read by dataReceived on the fast path.
    _out: Transport
    _service: Counters
    _server: Counters
    _seconds: Callable[[], float]

    def __init__(self, session: Pair) -> None:
        self.session = session
        self.tcp: Transport
        self.read_done = False
        self.write_done = False
        self.lost = False
        self.aborted = False
        self.feeding = False
        self.last_read = 0.0

    @property
    def peer(self) -> Side:
        """The other socket of the session."""
        return self.session.backend if self._is_client else self.session.client

    def wire(self, service: Counters, server: Counters, seconds: Callable[[], float]) -> None:
        """Start feeding the peer: register as its producer and cache what the fast path uses."""
        peer_tcp = self.peer.tcp
        peer_tcp.registerProducer(self, True)
        self.feeding = True
        self._out = peer_tcp
        self._service = service
        self._server = server
        self._seconds = seconds
        self.last_read = seconds()

    # IPushProducer, for the peer's transport: flow control only.

    def pauseProducing(self) -> None:
        """The peer's send buffer is full: stop reading this socket."""
        self.tcp.pauseProducing()

    def resumeProducing(self) -> None:
        """The peer's send buffer drained: read this socket again."""
        self.tcp.resumeProducing()

    def stopProducing(self) -> None:
        """The peer's transport is lost: left to ``connectionLost``, which knows how it ended."""

    def readConnectionLost(self) -> None:
        """The remote end sent FIN: send ours to the peer once its buffer is flushed."""
        if self.read_done:
            return
        self.read_done = True
        if not self.peer.lost:
            self._stop_feeding()
            self.peer.tcp.loseWriteConnection()
        self._close_if_done()

    def writeConnectionLost(self) -> None:
        """Our FIN went out to the remote end after the last buffered byte."""
        self.write_done = True
        self._close_if_done()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """Close the peer: after a flush if we closed this socket, with a reset otherwise.

        ``ConnectionDone`` only comes from our own ``loseConnection`` (a FIN from the remote
        end is ``readConnectionLost``); anything else is a reset, a failed write or an abort.
        """
        self.lost = True
        if not reason.check(ConnectionDone, ConnectionAborted):
            self.session.count_reset(client=self._is_client)
        peer = self.peer
        if peer.connected and not peer.lost:
            self._stop_feeding()
            if reason.check(ConnectionDone):
                peer.tcp.loseConnection()
            else:
                peer.abort()
        # Twisted unregistered the peer from our transport when it was lost.
        peer.feeding = False
        self.session.side_lost(self)

    def abort(self) -> None:
        """Reset this socket now, dropping whatever is still buffered for it."""
        if self.connected and not self.lost and not self.aborted:
            self.aborted = True
            self.tcp.abortConnection()

    def _stop_feeding(self) -> None:
        """Unregister this side as the producer of the peer's transport."""
        if self.feeding:
            self.feeding = False
            self.peer.tcp.unregisterProducer()

    def _close_if_done(self) -> None:
        """Close the socket once nothing will be read from or written to it any more."""
        if self.read_done and self.write_done and not self.lost:
            self.tcp.loseConnection()


class ClientSide(Side):
    """The accepted client socket; accepting it starts the session."""

    _is_client = True

    def connectionMade(self) -> None:
        """Pause the client until a backend is connected, then let the session pick one."""
        self.tcp = cast(Transport, self.transport)
        self.tcp.pauseProducing()
        self.tcp.setTcpNoDelay(True)
        self.tcp.setTcpKeepAlive(True)
        self.session.start()

    def dataReceived(self, data: bytes) -> None:
        """Forward client bytes to the backend.

        Fast path: runs once per ``recv()``; two counter bumps, a clock read and a write.
        """
        size = len(data)
        self._service.bin += size
        self._server.bin += size
        self.last_read = self._seconds()
        self._out.write(data)


class BackendSide(Side):
    """The socket to the backend; connecting it wires the session up."""

    _is_client = False

    def connectionMade(self) -> None:
        """The connect attempt succeeded: start forwarding."""
        self.tcp = cast(Transport, self.transport)
        self.tcp.setTcpNoDelay(True)
        self.tcp.setTcpKeepAlive(True)
        self.session.backend_connected()

    def dataReceived(self, data: bytes) -> None:
        """Forward backend bytes to the client.

        Fast path: runs once per ``recv()``; two counter bumps, a clock read and a write.
        """
        size = len(data)
        self._service.bout += size
        self._server.bout += size
        self.last_read = self._seconds()
        self._out.write(data)
