"""The two protocols of one proxied TCP connection, and how the backend connection is made.

Each accepted client gets a :class:`Session` that creates both sides together: a
:class:`ClientSide` on the accepted socket and a :class:`BackendSide` for the socket it opens
to a backend.  Neither side is ever re-pointed at another peer.

What happens, in order:

* **Accept.**  The client is paused (nothing is read) while the session picks a backend with
  the service's :class:`~ddiscover.proxy.balancer.Balancer`.  With no backend UP the client is
  accepted and closed at once, as haproxy does in TCP mode.
* **Connect and redispatch.**  Each attempt is one connect (``fastpath.connect``) bounded by
  ``connect_timeout``.  A failed attempt is classified with
  :func:`~ddiscover.health.result.classify_failure`, reported to the health checker (unless
  it is our own ``SOCKERR``), and the next attempt goes to a backend not tried yet (or, once
  every UP backend was tried, to the next one in turn), ``retries`` attempts in all.  The
  client sees nothing of this unless every attempt fails; then it is aborted.
* **Forwarding.**  Each transport is registered as the streaming producer of the other, so
  when one side's send buffer passes Twisted's ``bufferSize`` (64 KiB) the other side stops
  reading: ddiscover holds at most about two reads' worth per direction, and a slow reader
  slows the writer down through the kernel's windows instead of through our memory.
* **Half-close.**  Both sides provide ``IHalfCloseableProtocol``.  A FIN from one end
  (``readConnectionLost``) becomes ``loseWriteConnection`` on the other socket once what is
  buffered for it is flushed; the opposite direction keeps flowing.  A socket is closed once
  both its directions are done, which Twisted leaves to us.
* **Close and reset.**  ``connectionLost`` with ``ConnectionDone`` (we closed it) closes the
  other socket after its buffer is flushed; any other reason (the remote end reset it, a write
  failed) aborts the other socket, which sends an RST, so a cut stream never looks like a
  complete one to either end.
* **Idle timeout.**  Bytes read from either socket count as activity.  Reads only store a
  timestamp; one timer per session re-arms itself for the remainder when it fires early, and
  after ``idle_timeout`` without a read both sockets are aborted.

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
* When a transport is lost, Twisted itself calls ``stopProducing`` (that is,
  ``loseConnection``) on the producer registered with it, before our ``connectionLost`` runs.
* A paused transport does not see its peer's FIN or RST until it reads again, which is why a
  client that goes away while its backend connect is in flight is only noticed once the
  connect has finished, and why the idle timeout exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, cast

from twisted.internet import protocol
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IHalfCloseableProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ddiscover._log import make_logger
from ddiscover.catalog import Address, Backend
from ddiscover.config import Config
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure
from ddiscover.proxy import fastpath
from ddiscover.proxy.balancer import Balancer, HealthView
from ddiscover.proxy.counters import Counters
from ddiscover.proxy.reactor import ProxyReactor

log = make_logger()


class SessionTracker(Protocol):
    """Who is told about every session from accept to the close of its last socket."""

    def session_opened(self, session: Session) -> None:
        """A client was accepted."""

    def session_closed(self, session: Session) -> None:
        """Both sockets of ``session`` are closed (or the backend one was never opened)."""


class _Transport(Protocol):
    """The parts of a TCP transport (``tcp.Server``/``tcp.Client``) the sides use."""

    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: _Transport, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def loseConnection(self) -> None: ...
    def loseWriteConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def setTcpNoDelay(self, enabled: bool) -> None: ...
    def setTcpKeepAlive(self, enabled: bool) -> None: ...


@implementer(IHalfCloseableProtocol)
class _Side(protocol.Protocol):
    """One socket of a proxied connection: its half-close state and how its close propagates.

    ``feeding`` says whether this side's transport is registered as the producer of the
    peer's transport (this side's reads feed the peer's writes).
    """

    _is_client: ClassVar[bool]

    # Set when the backend is connected (see _wire); read by dataReceived on the fast path.
    _out: _Transport
    _service: Counters
    _server: Counters
    _seconds: Callable[[], float]

    def __init__(self, session: Session) -> None:
        self.session = session
        self.tcp: _Transport
        self.read_done = False
        self.write_done = False
        self.lost = False
        self.aborted = False
        self.feeding = False
        self.last_read = 0.0

    @property
    def peer(self) -> _Side:
        """The other socket of the session."""
        return self.session.backend if self._is_client else self.session.client

    def _wire(self, service: Counters, server: Counters, seconds: Callable[[], float]) -> None:
        """Start feeding the peer: register as its producer and cache what the fast path uses."""
        peer_tcp = self.peer.tcp
        peer_tcp.registerProducer(self.tcp, True)
        self.feeding = True
        self._out = peer_tcp
        self._service = service
        self._server = server
        self._seconds = seconds
        self.last_read = seconds()

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
        # Twisted unregistered the peer's transport from ours when ours was lost.
        peer.feeding = False
        self.session.side_lost(self)

    def abort(self) -> None:
        """Reset this socket now, dropping whatever is still buffered for it."""
        if self.connected and not self.lost and not self.aborted:
            self.aborted = True
            self.tcp.abortConnection()

    def _stop_feeding(self) -> None:
        """Unregister this side's transport as the producer of the peer's transport."""
        if self.feeding:
            self.feeding = False
            self.peer.tcp.unregisterProducer()

    def _close_if_done(self) -> None:
        """Close the socket once nothing will be read from or written to it any more."""
        if self.read_done and self.write_done and not self.lost:
            self.tcp.loseConnection()


class ClientSide(_Side):
    """The accepted client socket; accepting it starts the session."""

    _is_client = True

    def connectionMade(self) -> None:
        """Pause the client until a backend is connected, then let the session pick one."""
        self.tcp = cast(_Transport, self.transport)
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


class BackendSide(_Side):
    """The socket to the backend; connecting it wires the session up."""

    _is_client = False

    def connectionMade(self) -> None:
        """The connect attempt succeeded: start forwarding."""
        self.tcp = cast(_Transport, self.transport)
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


class _Attempt(protocol.ClientFactory):
    """One connect attempt of a session (to its ``server``); hands over the backend side.

    ``connector`` is what ``fastpath.connect`` returned for it, to cancel it.
    """

    # Factory logs "Starting factory" on every connect otherwise.
    noisy = False
    connector: IConnector

    def __init__(self, session: Session, started: float):
        self.session = session
        self.started = started

    def buildProtocol(self, addr: IAddress | None) -> BackendSide:
        return self.session.backend

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.session.connect_failed(self, reason)


class Session:
    """One proxied client connection: both its sockets, its connect attempts, its idle timer.

    ``termination`` says how it ended, in haproxy's two-letter terms (``--`` normal; ``CD``
    and ``SD`` reset by the client or the server; ``CC`` client gone while connecting; ``SC``
    and ``sC`` no server, refused or timed out; ``cD`` idle timeout; ``KD`` killed at the
    drain deadline).  It is set on those rare events only and read by the access log.
    """

    client_side: ClassVar[type[ClientSide]] = ClientSide
    backend_side: ClassVar[type[BackendSide]] = BackendSide
    # A class default, so the common case costs no per-session assignment.
    termination = "--"

    def __init__(self, proxy: ServiceProxy) -> None:
        self._proxy = proxy
        self.client = self.client_side(self)
        self.backend = self.backend_side(self)
        self.server: Backend | None = None
        self._server_counters: Counters | None = None
        # A tuple: almost always one address, and an empty set alone is 216 bytes per session.
        self._tried: tuple[Address, ...] = ()
        self._attempt: _Attempt | None = None
        self._idle: IDelayedCall | None = None

    @property
    def attempts(self) -> int:
        """Connect attempts made so far (each one is in ``_tried``)."""
        return len(self._tried)

    def start(self) -> None:
        """Count the session and connect to the first backend, or close if there is none."""
        proxy = self._proxy
        proxy.counters.session_opened(proxy.reactor.seconds())
        proxy.tracker.session_opened(self)
        backend = proxy.balancer.choose()
        if backend is None:
            self.termination = "SC"
            proxy.no_server()
            self.client.tcp.loseConnection()
            return
        self._connect(backend)

    def abort(self, termination: str = "KD") -> None:
        """Reset both sockets now; cancels a connect in flight.

        ``termination`` is the access log's reason: ``KD`` (the drain deadline) unless given.
        """
        self.termination = termination
        self.client.abort()
        self.backend.abort()

    def _connect(self, backend: Backend) -> None:
        proxy = self._proxy
        counters = proxy.servers[backend]
        started = proxy.reactor.seconds()
        counters.session_opened(started)
        self.server, self._server_counters = backend, counters
        self._tried += (backend.address,)
        attempt = self._attempt = _Attempt(self, started)
        address = backend.address
        # Not an endpoint: this runs for every proxied connection, and an endpoint would add a
        # Deferred chain, a wrapping factory and a wrapping protocol.
        attempt.connector = fastpath.connect(
            proxy.reactor, address.host, address.port, attempt, proxy.connect_timeout
        )

    def connect_failed(self, attempt: _Attempt, reason: Failure) -> None:
        """Report the failed attempt and redispatch, or abort the client after the last one."""
        if attempt is not self._attempt:
            return  # cancelled by _cancel_connect: the client is gone
        backend, server = self.server, self._server_counters
        assert backend is not None and server is not None, "an attempt without a backend"
        self._attempt = None
        # ``server`` stays: the backend last tried, for the access log.
        self._server_counters = None
        proxy = self._proxy
        server.session_closed()
        result = classify_failure(reason, proxy.reactor.seconds() - attempt.started)
        if result.counts:
            proxy.health.report(backend.address, result)
        retry = None
        if self.attempts < proxy.max_attempts:
            retry = proxy.balancer.choose(exclude=self._tried) or proxy.balancer.choose()
        service = proxy.counters
        if retry is None:
            service.econ += 1
            if result.counts:
                server.econ += 1
            proxy.gave_up(backend, result, self.attempts)
            self.termination = "sC" if result.status is CheckStatus.L4TOUT else "SC"
            self.client.abort()
            return
        if retry.address == backend.address:
            service.wretr += 1
            if result.counts:
                server.wretr += 1
        else:
            service.wredis += 1
            if result.counts:
                server.wredis += 1
        log.debug(
            "service {service}: connect to {backend} failed ({status} {info}); trying {retry}",
            service=proxy.name,
            backend=str(backend.address),
            status=result.status.value,
            info=result.info,
            retry=str(retry.address),
        )
        self._connect(retry)

    def backend_connected(self) -> None:
        """Wire the two transports together and start reading the client."""
        self._attempt = None
        proxy = self._proxy
        proxy.connected()
        server = self._server_counters
        assert server is not None, "a backend connected without an attempt"
        seconds = proxy.reactor.seconds
        client, backend = self.client, self.backend
        client._wire(proxy.counters, server, seconds)
        backend._wire(proxy.counters, server, seconds)
        if proxy.idle_timeout > 0:
            self._idle = proxy.reactor.callLater(proxy.idle_timeout, self._idle_check)
        # Only now that both producers are registered may the client be read.
        client.tcp.resumeProducing()

    def _idle_check(self) -> None:
        """Abort if nothing was read either way for idle_timeout, else wait for the rest."""
        proxy = self._proxy
        quiet_since = max(self.client.last_read, self.backend.last_read)
        remaining = quiet_since + proxy.idle_timeout - proxy.reactor.seconds()
        if remaining > 0:
            self._idle = proxy.reactor.callLater(remaining, self._idle_check)
            return
        self._idle = None
        log.debug(
            "service {service}: connection to {backend} idle for {timeout}s; closing",
            service=proxy.name,
            backend=str(self.server.address) if self.server else "-",
            timeout=proxy.idle_timeout,
        )
        self.abort("cD")

    def count_reset(self, *, client: bool) -> None:
        """Count a session the client (``client=True``) or the backend reset."""
        if self.termination == "--":
            self.termination = "CD" if client else "SD"
        counters = [self._proxy.counters]
        if self._server_counters is not None:
            counters.append(self._server_counters)
        for each in counters:
            if client:
                each.cli_abrt += 1
            else:
                each.srv_abrt += 1

    def side_lost(self, side: _Side) -> None:
        """One socket closed: cancel a connect the client no longer needs; finish if all are."""
        backend = self.backend
        if side is self.client and not backend.connected:
            self._cancel_connect()
        if self.client.lost and (backend.lost or not backend.connected):
            self._finish()

    def _cancel_connect(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            self.termination = "CC"
            attempt.connector.stopConnecting()

    def _finish(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        proxy = self._proxy
        proxy.counters.session_closed()
        if self._server_counters is not None:
            self._server_counters.session_closed()
        proxy.tracker.session_closed(self)
        # The session and its sides refer to each other; breaking that cycle frees all three
        # by reference counting now, instead of leaving them to the cycle collector, whose
        # passes over every connection's garbage were most of new connections' p99 latency.
        del self.client.session, self.backend.session


class ServiceProxy(protocol.ServerFactory):
    """The listening factory of one service: a :class:`Session` per accepted client.

    It lives as long as the service does, across backend changes and port moves, and holds
    what the stats page shows for the service: its balancer, its counters and one set of
    counters per backend.  ``session`` makes the session of each accepted client (the access
    log passes a logging one).  ``idle_timeout`` of 0 or less disables the idle timeout.
    ``retries`` is the total number of connect attempts per client (at least one).

    "No server available" is logged once per outage: again only after a connection has
    reached a backend since, so an outage logs one line however many clients arrive.
    """

    # Factory logs "Starting factory" every time a port opens otherwise; Listeners logs that.
    noisy = False

    def __init__(
        self,
        name: str,
        reactor: ProxyReactor,
        config: Config,
        health: HealthView,
        tracker: SessionTracker,
        *,
        session: Callable[[ServiceProxy], Session] = Session,
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.health = health
        self.tracker = tracker
        self.connect_timeout = config.connect_timeout
        self.idle_timeout = config.idle_timeout
        self.max_attempts = max(1, config.retries)
        self.balancer = Balancer(health)
        self.counters = Counters()
        self.servers: dict[Backend, Counters] = {}
        self._session = session
        self._outage_logged = False

    def update(self, backends: frozenset[Backend]) -> None:
        """Take a new backend set, keeping the rotation and the counters of kept backends.

        Open sessions keep counting on the counters they started with.
        """
        self.balancer.update(backends)
        previous = self.servers
        self.servers = {backend: previous.get(backend) or Counters() for backend in backends}

    def buildProtocol(self, addr: IAddress | None) -> ClientSide:
        return self._session(self).client

    def no_server(self) -> None:
        """A client arrived while no backend is UP."""
        if not self._outage_logged:
            self._outage_logged = True
            log.warn("service {service} has no server available!", service=self.name)

    def gave_up(self, backend: Backend, result: CheckResult, attempts: int) -> None:
        """Every connect attempt for a client failed."""
        if not self._outage_logged:
            self._outage_logged = True
            log.warn(
                "service {service}: no server accepted the connection after {attempts} "
                "attempts; last {backend}: {status} {info}",
                service=self.name,
                attempts=attempts,
                backend=str(backend.address),
                status=result.status.value,
                info=result.info,
            )

    def connected(self) -> None:
        """A connection reached a backend: the next outage is worth a log line again."""
        self._outage_logged = False
