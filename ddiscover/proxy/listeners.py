"""One listening port per service, reconciled live with the catalog, under a global maxconn.

:class:`Listeners` owns a :class:`~ddiscover.proxy.service.ServiceProxy` per service for
as long as the service exists: a change of backends only updates its balancer, a change of
port closes the old port and opens the new one with the same factory (so counters carry on),
and a removed service stops listening at once while its open connections run to completion.

Rules it keeps:

* **Ports are independent.**  A port that cannot be bound (in use, no permission) is logged
  once, shown as the frontend's state, and retried every ``retry_interval`` seconds on the
  reactor's clock; it never holds up the other services.
* **A port being closed is waited for.**  ``stopListening`` closes the socket on the next
  reactor turn, so when a catalog moves a port from one service to another (or swaps two),
  the new listener binds once the old socket is gone instead of failing with "address in use".
* **maxconn is global.**  When the proxied connections of all services reach
  ``config.maxconn``, every port stops accepting (``pauseProducing``: the kernel's accept queue
  of ``config.backlog`` holds new clients, nothing is refused or reset) and accepting resumes
  as soon as one closes.  ``tcp.Port`` accepts in batches sized when the batch starts, so
  pausing alone would let a batch in progress overshoot the cap (1,280 connections were
  measured with maxconn 1,000); the ports opened here (``fastpath.ProxyPort``) therefore cut
  each batch to the room left when it starts.  Ports of fake reactors are only paused.
* **Stopping drains.**  ``stopService`` stops listening on every port at once, lets open
  connections finish for up to ``config.drain_timeout`` seconds, then aborts the rest, and
  fires once every connection is closed.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IPushProducer
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Address, Backend, Catalog, Rejection
from ddiscover.catalog import Service as CatalogService
from ddiscover.config import Config
from ddiscover.health.state import HealthRecord
from ddiscover.modes.tcp import Session
from ddiscover.proxy import fastpath
from ddiscover.proxy.access_log import LoggedSession
from ddiscover.proxy.balancer import Balancer, HealthView
from ddiscover.proxy.budget import fd_budget
from ddiscover.proxy.counters import Counters
from ddiscover.proxy.loops import LoopGuard
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.proxy.service import ServiceProxy
from ddiscover.text import clip

log = make_logger()

#: Frontend states, as haproxy's stats page shows them.  A port that cannot be bound shows
#: why instead ("cannot listen on 0.0.0.0:80: [Errno 98] Address already in use").
OPEN = "OPEN"
FULL = "FULL"
STOP = "STOP"


@attrs.frozen
class Frontend:
    """What the stats page shows of one service: its port, listener state and counters."""

    name: str
    port: int
    state: str
    balancer: Balancer
    counters: Counters
    servers: Mapping[Backend, Counters]

    @property
    def listening(self) -> bool:
        """Whether the port is bound (accepting, or paused at maxconn)."""
        return self.state in (OPEN, FULL)


@attrs.define(eq=False)
class _Listener:
    """The listening state of one service; ``epoch`` invalidates opens scheduled earlier."""

    proxy: ServiceProxy
    port: int
    listening: IListeningPort | None = None
    state: str = STOP
    retry: IDelayedCall | None = None
    failures: int = 0
    epoch: int = 0


class Listeners(Service):
    """Every service's listening port, the global connection count, and draining on stop."""

    def __init__(
        self,
        reactor: ProxyReactor,
        config: Config,
        health: HealthView,
        retry_interval: float = 5.0,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._health = health
        self._retry_interval = retry_interval
        self._listeners: dict[str, _Listener] = {}
        self._sessions: set[Session] = set()
        self._closing: dict[int, Deferred[None]] = {}
        self._full = False
        self._full_logged = False
        self._drained: Deferred[None] | None = None
        self._deadline: IDelayedCall | None = None
        # Chosen once here, so without --access-log no connection pays for it.
        self._session = LoggedSession if config.access_log else Session
        # Services holding clients until a backend's first check passes.
        self._holding: set[ServiceProxy] = set()
        self._budget = fd_budget(config.fd_limit) if config.fd_limit > 0 else None
        # Services refused a listener by the budget, logged once each.
        self._over_budget: set[str] = set()
        self._loops = LoopGuard(config.interface)
        # The local ends of every service's backend sockets, to refuse loops at accept.
        self._own_ends: dict[tuple[str, int, int], Session] = {}
        health.subscribe(self._health_changed)

    @property
    def active(self) -> int:
        """Proxied connections open right now, across all services (connecting included)."""
        return len(self._sessions)

    def frontends(self) -> Mapping[str, Frontend]:
        """Per service: its port, listener state, balancer and counters."""
        return {
            name: Frontend(
                name=name,
                port=listener.port,
                state=listener.state,
                balancer=listener.proxy.balancer,
                counters=listener.proxy.counters,
                servers=listener.proxy.servers,
            )
            for name, listener in sorted(self._listeners.items())
        }

    def reconcile(self, catalog: Catalog) -> None:
        """Open, move and close ports so that exactly the catalog's services are listened for.

        Every port to close is closed before any is opened, so a port handed from one service
        to another in the same catalog is free (once its close completes) when it is opened.
        """
        wanted = catalog.services
        for name in sorted(self._listeners.keys() - wanted.keys()):
            self._close(self._listeners.pop(name))
        to_open: list[_Listener] = []
        for name, service in sorted(wanted.items()):
            listener = self._listeners.get(name)
            if listener is None:
                proxy = ServiceProxy(
                    name,
                    self._reactor,
                    self._config,
                    self._health,
                    self,
                    session=self._session,
                    on_waiting=self._waiting,
                    own_ends=self._own_ends,
                )
                listener = self._listeners[name] = _Listener(proxy, service.port)
                to_open.append(listener)
            elif listener.port != service.port:
                self._close(listener)
                listener.port = service.port
                to_open.append(listener)
            listener.proxy.update(service.backends)
        if self.running:
            for listener in to_open:
                self._open(listener)

    def budgeted(self, catalog: Catalog) -> Catalog:
        """``catalog`` without backends that loop back into ddiscover (see
        :mod:`ddiscover.proxy.loops`), cut to the services that get a listener under the
        descriptor budget (see :mod:`ddiscover.proxy.budget`), for the checker and
        :meth:`reconcile` alike.

        At most ``per_service`` listeners per registry service (the ports of one ``port``
        key) and ``listeners`` in all, services listening already first.  The rest become
        one rejection per registry service, logged once while it lasts.
        """
        catalog = self._loops.refuse(catalog)
        budget, services = self._budget, catalog.services
        if budget is None or len(services) <= budget.per_service:
            self._over_budget = set()
            return catalog
        listening = self._listeners.keys()
        kept: dict[str, CatalogService] = {}
        per_group: dict[str, int] = {}
        refused: dict[str, list[str]] = {}
        for name in sorted(services, key=lambda name: (name not in listening, name)):
            group = _registry_service(services[name])
            if per_group.get(group, 0) >= budget.per_service or len(kept) >= budget.listeners:
                refused.setdefault(group, []).append(name)
                continue
            per_group[group] = per_group.get(group, 0) + 1
            kept[name] = services[name]
        logged, self._over_budget = self._over_budget, set(refused)
        rejections = set(catalog.rejections)
        for group, names in sorted(refused.items()):
            reason = (
                f"not listening on {len(names)} of its ports ({services[names[0]].port} and "
                f"more): over the budget of {budget.per_service} listeners per service and "
                f"{budget.listeners} in all under the open-files limit {budget.limit}"
            )
            rejections.add(Rejection(clip(group), reason))
            if group not in logged:
                log.error("service {service}: {reason}", service=clip(group), reason=reason)
        return Catalog(kept, frozenset(rejections))

    def startService(self) -> None:
        """Open the port of every service reconciled so far."""
        super().startService()
        for _, listener in sorted(self._listeners.items()):
            self._open(listener)

    def stopService(self) -> Deferred[None]:
        """Stop listening everywhere, drain for up to ``drain_timeout``, then abort the rest."""
        super().stopService()
        for _, listener in sorted(self._listeners.items()):
            self._close(listener)
        waits = list(self._closing.values())
        if self._sessions:
            log.info(
                "draining {count} connections for up to {timeout}s",
                count=len(self._sessions),
                timeout=self._config.drain_timeout,
            )
            self._drained = Deferred()
            self._deadline = self._reactor.callLater(self._config.drain_timeout, self._abort_all)
            waits.append(self._drained)
        return gatherResults(waits).addCallback(lambda _: None)

    def session_opened(self, session: Session) -> None:
        """Count a new connection; at maxconn, stop accepting."""
        self._sessions.add(session)
        if not self._full and len(self._sessions) >= self._config.maxconn:
            self._set_full(True)

    def _room(self) -> int:
        """How many more connections maxconn allows now."""
        return self._config.maxconn - len(self._sessions)

    def session_closed(self, session: Session) -> None:
        """Count a closed connection; resume accepting below maxconn; finish a drain."""
        self._sessions.remove(session)
        active = len(self._sessions)
        maxconn = self._config.maxconn
        if self._full and active < maxconn:
            self._set_full(False)
        if self._full_logged and active <= maxconn * 9 // 10:
            self._full_logged = False
            log.info(
                "{active} connections, below 90% of maxconn {maxconn} again",
                active=active,
                maxconn=maxconn,
            )
        if self._drained is not None and not self._sessions:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            drained, self._drained = self._drained, None
            drained.callback(None)

    def _waiting(self, proxy: ServiceProxy, waiting: bool) -> None:
        """``proxy`` started or stopped holding clients until a backend is UP."""
        if waiting:
            self._holding.add(proxy)
        else:
            self._holding.discard(proxy)

    def _health_changed(self, address: Address, old: HealthRecord, new: HealthRecord) -> None:
        """A backend's health changed: let the services holding clients forward them."""
        for proxy in list(self._holding):
            proxy.dispatch_waiting()

    def _open(self, listener: _Listener) -> None:
        """Bind the listener's port, after a close of the same port completes; retry on error."""
        listener.retry = None
        closing = self._closing.get(listener.port)
        if closing is not None:
            closing.addCallback(self._open_after_close, listener, listener.epoch)
            return
        name, interface, number = listener.proxy.name, self._config.interface, listener.port
        try:
            port = fastpath.listen(
                self._reactor, number, listener.proxy, self._config.backlog, interface, self._room
            )
        except (CannotListenError, OSError) as error:
            # tcp.Port wraps bind() errors in CannotListenError but lets listen() errors out raw.
            reason = error.socketError if isinstance(error, CannotListenError) else error
            listener.failures += 1
            listener.state = f"cannot listen on {interface}:{number}: {reason}"
            if listener.failures == 1:
                log.error(
                    "service {service}: cannot listen on {interface}:{port}: {error}; "
                    "retrying every {retry}s",
                    service=name,
                    interface=interface,
                    port=number,
                    error=str(reason),
                    retry=self._retry_interval,
                )
            listener.retry = self._reactor.callLater(self._retry_interval, self._open, listener)
            return
        listener.listening = port
        listener.proxy.port = number
        listener.state = OPEN
        if self._full:
            _pause(port, True)
            listener.state = FULL
        if listener.failures:
            log.info(
                "service {service}: listening on {interface}:{port} after {failures} failed "
                "attempts",
                service=name,
                interface=interface,
                port=number,
                failures=listener.failures,
            )
        else:
            log.info(
                "service {service}: listening on {interface}:{port}",
                service=name,
                interface=interface,
                port=number,
            )
        listener.failures = 0

    def _open_after_close(self, result: None, listener: _Listener, epoch: int) -> None:
        if listener.epoch == epoch and self.running:
            self._open(listener)
        return result

    def _close(self, listener: _Listener) -> None:
        """Stop listening (or stop retrying); connections already accepted carry on."""
        listener.epoch += 1
        listener.state = STOP
        listener.failures = 0
        if listener.retry is not None:
            listener.retry.cancel()
            listener.retry = None
        port, listener.listening = listener.listening, None
        if port is None:
            return
        number = listener.port
        stopped = port.stopListening()
        closing = stopped if isinstance(stopped, Deferred) else succeed(None)
        self._closing[number] = closing
        closing.addBoth(self._closed, listener.proxy.name, number, closing)
        log.info(
            "service {service}: stopped listening on {interface}:{port}",
            service=listener.proxy.name,
            interface=self._config.interface,
            port=number,
        )

    def _closed(
        self, result: Failure | None, name: str, number: int, closing: Deferred[None]
    ) -> None:
        if self._closing.get(number) is closing:
            del self._closing[number]
        if isinstance(result, Failure):
            log.failure(
                "service {service}: closing port {port} failed", failure=result, service=name
            )

    def _set_full(self, full: bool) -> None:
        """Pause or resume accepting on every open port."""
        self._full = full
        for listener in self._listeners.values():
            if listener.listening is not None:
                _pause(listener.listening, full)
                listener.state = FULL if full else OPEN
        if full and not self._full_logged:
            self._full_logged = True
            log.warn(
                "maxconn {maxconn} reached: not accepting until connections close; "
                "new clients wait in the accept queue",
                maxconn=self._config.maxconn,
            )

    def _abort_all(self) -> None:
        self._deadline = None
        log.warn(
            "{count} connections still open after {timeout}s; aborting them",
            count=len(self._sessions),
            timeout=self._config.drain_timeout,
        )
        for session in list(self._sessions):
            session.abort()


def _registry_service(service: CatalogService) -> str:
    """The registry service a listen port belongs to: ``app`` for ``app:443``, one of the
    services a ``port`` key listing several ports makes (see :mod:`ddiscover.registry.layout`)."""
    suffix = f":{service.port}"
    return service.name[: -len(suffix)] if service.name.endswith(suffix) else service.name


def _pause(port: IListeningPort, paused: bool) -> None:
    """Stop or resume accepting on ``port``; the kernel queues new clients meanwhile."""
    producer = IPushProducer(port, None)
    if producer is not None:
        if paused:
            producer.pauseProducing()
        else:
            producer.resumeProducing()
