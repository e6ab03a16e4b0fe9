"""The per-service dispatcher: the listening factory that makes a TCP session per client.

A :class:`ServiceProxy` lives as long as its service, across backend changes and port moves,
and holds what the stats page shows of it: its balancer and counters.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall

from ddiscover._log import make_logger
from ddiscover.catalog import Backend
from ddiscover.config import Config
from ddiscover.health.result import CheckResult
from ddiscover.modes.tcp import Session, SessionTracker
from ddiscover.proxy.balancer import Balancer, HealthView
from ddiscover.proxy.counters import Counters
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.proxy.relay import ClientSide
from ddiscover.text import clip

log = make_logger()


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
        on_waiting: Callable[[ServiceProxy, bool], None] = lambda proxy, waiting: None,
        own_ends: dict[tuple[str, int, int], Session] | None = None,
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
        # Held sessions in arrival order, each with its queue timeout.
        self._waiting: dict[Session, IDelayedCall] = {}
        self._on_waiting = on_waiting
        self.own_ends = own_ends
        #: The port listened on for the service (set by the listeners), or 0.
        self.port = 0
        self._loops_logged: set[Backend] = set()

    def update(self, backends: frozenset[Backend]) -> None:
        """Take a new backend set, keeping the rotation and the counters of kept backends.

        Open sessions keep counting on the counters they started with.
        """
        self.balancer.update(backends)
        previous = self.servers
        self.servers = {backend: previous.get(backend) or Counters() for backend in backends}
        if self._waiting:
            self.dispatch_waiting()

    def buildProtocol(self, addr: IAddress | None) -> ClientSide | None:
        """A session for the client at ``addr``, or ``None`` (Twisted closes the socket at
        once) if ``addr`` is the local end of one of our own backend sockets to this port:
        a loop.  The port must match too: the kernel gives the same local port to
        connections to different destinations, so a client's port alone proves nothing."""
        own_ends = self.own_ends
        # object, not IAddress: mypy-zope cannot narrow an interface to a class.
        peer: object = addr
        if own_ends and isinstance(peer, IPv4Address | IPv6Address):
            looping = own_ends.get((peer.host, peer.port, self.port))
            if looping is not None:
                self._refuse_loop(looping)
                return None
        return self._session(self).client

    def _refuse_loop(self, looping: Session) -> None:
        backend = looping.server
        if backend is not None and backend not in self._loops_logged:
            self._loops_logged.add(backend)
            log.error(
                "service {service}: refused a connection from our own connect to backend "
                "{backend} at {address}: it loops back into ddiscover",
                service=self.name,
                backend=clip(backend.id),
                address=str(backend.address),
            )

    @property
    def waiting(self) -> int:
        """Clients held until a backend's first check passes."""
        return len(self._waiting)

    def hold(self, session: Session) -> bool:
        """Queue ``session`` for up to ``connect_timeout`` if a backend waits for its first
        check (so may be UP soon); say False, leaving it to be closed, if none does."""
        if not self.balancer.pending():
            return False
        if not self._waiting:
            self._on_waiting(self, True)
        self._waiting[session] = self.reactor.callLater(
            self.connect_timeout, self._queue_timeout, session
        )
        return True

    def release(self, session: Session) -> None:
        """Take ``session`` out of the queue (it leaves it, or was closed while in it)."""
        timer = self._waiting.pop(session, None)
        if timer is None:
            return
        if timer.active():
            timer.cancel()
        if not self._waiting:
            self._on_waiting(self, False)

    def dispatch_waiting(self) -> None:
        """Forward held clients, in arrival order, to the backends UP now; once no backend
        is UP or still waits for a first check, close the rest (``SC``)."""
        while self._waiting:
            backend = self.balancer.choose()
            if backend is None:
                break
            session = next(iter(self._waiting))
            self.release(session)
            session.dispatch(backend)
        if self._waiting and not self.balancer.pending():
            self.no_server()
            for session in list(self._waiting):
                self.release(session)
                session.refuse("SC")

    def _queue_timeout(self, session: Session) -> None:
        self.release(session)
        self._warn_outage(
            "service {service}: no server came UP within {timeout}s of a client arriving; "
            "closing it",
            timeout=self.connect_timeout,
        )
        session.refuse("sQ")

    def no_server(self) -> None:
        """A client arrived while no backend is UP."""
        self._warn_outage("service {service} has no server available!")

    def gave_up(self, backend: Backend, result: CheckResult, attempts: int) -> None:
        """Every connect attempt for a client failed."""
        self._warn_outage(
            "service {service}: no server accepted the connection after {attempts} "
            "attempts; last {backend}: {status} {info}",
            attempts=attempts,
            backend=str(backend.address),
            status=result.status.value,
            info=result.info,
        )

    def _warn_outage(self, text: str, **fields: object) -> None:
        """Log ``text`` if it is the first line of this outage."""
        if not self._outage_logged:
            self._outage_logged = True
            log.warn(text, service=self.name, **fields)

    def connected(self) -> None:
        """A connection reached a backend: the next outage is worth a log line again."""
        self._outage_logged = False
