"""TCP mode: one proxied client connection, from accept to the close of its last socket.

Each accepted client gets a :class:`Session`, which creates both sides of its relay
(:mod:`ddiscover.proxy.relay`) and decides where the backend socket goes.

What happens, in order:

* **Accept.**  The client is paused (nothing is read) while the session picks a backend with
  the service's :class:`~ddiscover.proxy.balancer.Balancer`.  With no backend UP the client
  waits in the service's queue while a backend still waits for its first check (ddiscover
  just started, or the service just appeared), for up to ``connect_timeout``, and goes to
  the first backend that comes UP; otherwise (or once every first check failed, or the time
  is up) it is accepted and closed, as haproxy does in TCP mode.
* **Connect and redispatch.**  Each attempt is one connect (``fastpath.connect``) bounded by
  ``connect_timeout``.  A failed attempt is classified with
  :func:`~ddiscover.health.result.classify_failure`, reported to the health checker (unless
  it is our own ``SOCKERR``), and the next attempt goes to a backend not tried yet (or, once
  every UP backend was tried, to the next one in turn), ``retries`` attempts in all.  The
  client sees nothing of this unless every attempt fails; then it is aborted.
* **Forwarding.**  Once connected, the two sides relay bytes with flow control and half-close
  (see :mod:`ddiscover.proxy.relay`).
* **Idle timeout.**  Bytes read from either socket count as activity.  Reads only store a
  timestamp; one timer per session re-arms itself for the remainder when it fires early, and
  after ``idle_timeout`` without a read both sockets are aborted.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from twisted.internet import protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IConnector, IDelayedCall
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Address, Backend
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure
from ddiscover.proxy import fastpath
from ddiscover.proxy.balancer import Balancer, HealthView
from ddiscover.proxy.counters import Counters
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.proxy.relay import BackendSide, ClientSide, Side

log = make_logger()


class SessionTracker(Protocol):
    """Who is told about every session from accept to the close of its last socket."""

    def session_opened(self, session: Session) -> None:
        """A client was accepted."""

    def session_closed(self, session: Session) -> None:
        """Both sockets of ``session`` are closed (or the backend one was never opened)."""


class Dispatcher(Protocol):
    """What a session needs of its service (:class:`~ddiscover.proxy.service.ServiceProxy`)."""

    name: str
    reactor: ProxyReactor
    health: HealthView
    tracker: SessionTracker
    connect_timeout: float
    idle_timeout: float
    max_attempts: int
    #: ``(local host, local port, destination port)`` of every backend socket, to tell our
    #: own connects when they come back in (a loop); ``None`` turns that off.
    own_ends: dict[tuple[str, int, int], Session] | None
    balancer: Balancer
    counters: Counters
    servers: dict[Backend, Counters]

    def hold(self, session: Session) -> bool:
        """Queue ``session`` until a backend is UP, if one may be soon; else say False."""

    def release(self, session: Session) -> None:
        """``session`` is gone from the queue (closed while waiting)."""

    def no_server(self) -> None:
        """A client arrived while no backend is UP."""

    def gave_up(self, backend: Backend, result: CheckResult, attempts: int) -> None:
        """Every connect attempt for a client failed."""

    def connected(self) -> None:
        """A connection reached a backend."""


class _Attempt(protocol.ClientFactory):
    """One connect attempt of a session (to its ``server``); hands over the backend side.

    ``connector`` is what ``fastpath.connect`` returned for it, to cancel it, until the
    attempt is over: the connector refers to the attempt as its factory, so the session drops
    that cycle (:meth:`Session._end_attempt`) and the finished session is freed by reference
    counting, without waiting for the cycle collector.
    """

    # Factory logs "Starting factory" on every connect otherwise.
    noisy = False
    connector: IConnector | None = None

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
    and ``sC`` no server, refused or timed out; ``sQ`` held for a first check, none came UP
    in time; ``cD`` idle timeout; ``KD`` killed at the drain deadline).  It is set on those
    rare events only and read by the access log.
    """

    client_side: ClassVar[type[ClientSide]] = ClientSide
    backend_side: ClassVar[type[BackendSide]] = BackendSide
    # Class defaults, so the common case costs no per-session assignment.
    termination = "--"
    #: Whether the session waits in its service's queue for a backend's first check.
    held = False
    #: The local end of the backend socket, while it is in the service's ``own_ends``.
    _own_end: tuple[str, int, int] | None = None

    def __init__(self, proxy: Dispatcher) -> None:
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
        """Count the session and connect to the first backend; with none UP, wait in the
        service's queue if one may come UP soon, else close."""
        proxy = self._proxy
        proxy.counters.session_opened(proxy.reactor.seconds())
        proxy.tracker.session_opened(self)
        backend = proxy.balancer.choose()
        if backend is not None:
            self._connect(backend)
        elif proxy.hold(self):
            self.held = True
        else:
            proxy.no_server()
            self.refuse("SC")

    def dispatch(self, backend: Backend) -> None:
        """Leave the queue for ``backend``, which just came UP."""
        self.held = False
        self._connect(backend)

    def refuse(self, termination: str) -> None:
        """Close the client unforwarded: no server (``SC``) or none came UP in time (``sQ``)."""
        self.held = False
        self.termination = termination
        self.client.tcp.loseConnection()

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
        connector = attempt.connector = fastpath.connect(
            proxy.reactor, address.host, address.port, attempt, proxy.connect_timeout
        )
        # Known before the connect completes, which matters: a connect that loops back into
        # ddiscover may be accepted before we see it complete.
        if proxy.own_ends is not None and isinstance(connector, fastpath.LeanConnect):
            end = connector.local_end()
            if end is not None:
                self._track_own_end(*end)

    def _track_own_end(self, host: str, port: int) -> None:
        """Let the service know ``host:port`` is our end of the socket to the backend, to
        refuse it if it comes back in (a loop)."""
        own_ends, server = self._proxy.own_ends, self.server
        if own_ends is not None and server is not None:
            self._own_end = end = (host, port, server.address.port)
            own_ends[end] = self

    def _forget_own_end(self) -> None:
        end, self._own_end = self._own_end, None
        own_ends = self._proxy.own_ends
        if end is not None and own_ends is not None and own_ends.get(end) is self:
            del own_ends[end]

    def connect_failed(self, attempt: _Attempt, reason: Failure) -> None:
        """Report the failed attempt and redispatch, or abort the client after the last one."""
        if attempt is not self._attempt:
            return  # cancelled by _cancel_connect: the client is gone
        backend, server = self.server, self._server_counters
        assert backend is not None and server is not None, "an attempt without a backend"
        self._end_attempt()
        self._forget_own_end()
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
        self._end_attempt()
        proxy = self._proxy
        proxy.connected()
        server = self._server_counters
        assert server is not None, "a backend connected without an attempt"
        seconds = proxy.reactor.seconds
        client, backend = self.client, self.backend
        client.wire(proxy.counters, server, seconds)
        backend.wire(proxy.counters, server, seconds)
        if proxy.own_ends is not None and self._own_end is None:
            local: object = backend.tcp.getHost()
            if isinstance(local, IPv4Address | IPv6Address):
                self._track_own_end(local.host, local.port)
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

    def side_lost(self, side: Side) -> None:
        """One socket closed: cancel a connect the client no longer needs; finish if all are."""
        backend = self.backend
        if side is self.client and not backend.connected:
            self._cancel_connect()
        if self.client.lost and (backend.lost or not backend.connected):
            self._finish()

    def _cancel_connect(self) -> None:
        attempt = self._attempt
        if attempt is not None:
            self.termination = "CC"
            connector = attempt.connector
            self._end_attempt()
            if connector is not None:
                connector.stopConnecting()

    def _end_attempt(self) -> None:
        """Forget the attempt in flight, and break its cycle with its connector."""
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.connector = None

    def _finish(self) -> None:
        if self.held:
            self.held = False
            self._proxy.release(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        proxy = self._proxy
        self._forget_own_end()
        proxy.counters.session_closed()
        if self._server_counters is not None:
            self._server_counters.session_closed()
        proxy.tracker.session_closed(self)
        # The session and its sides refer to each other; breaking that cycle frees all three
        # by reference counting now, instead of leaving them to the cycle collector, whose
        # passes over every connection's garbage were most of new connections' p99 latency.
        del self.client.session, self.backend.session
