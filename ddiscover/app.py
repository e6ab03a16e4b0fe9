"""Build the whole ddiscover service tree from a :class:`Config` and the reactor.

:func:`build_service` takes every collaborator that does I/O (the reactor, the HTTP client,
the endpoint factory for health checks), so tests build the same tree on fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorTCP,
    IReactorTime,
)
from twisted.web.client import HTTPConnectionPool

from ddiscover._log import make_logger
from ddiscover.catalog import Catalog, diff
from ddiscover.config import Config
from ddiscover.health.checker import HealthChecker
from ddiscover.health.probe import EndpointFactory, tcp_endpoint_factory
from ddiscover.loop_lag import LoopLagProbe
from ddiscover.proxy.listeners import Listeners
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.registry.api import registry_client
from ddiscover.registry.client import HTTPClientLike, build_http_client
from ddiscover.registry.watcher import RegistryWatcher
from ddiscover.stats.site import StatsSite
from ddiscover.stats.state import StatsSources
from ddiscover.stats.web import StatsRoot

log = make_logger()


class Discovery:
    """Fans each new catalog out to the health checker and the listeners, in that order.

    Health first, so a backend new to the catalog has its check loop before its service's
    listener can hand it connections; it is not routable until its first check passes.
    """

    def __init__(
        self,
        checker: HealthChecker,
        listeners: Listeners,
        on_first_catalog: Callable[[], object] = lambda: None,
    ) -> None:
        self.catalog = Catalog()
        self._checker = checker
        self._listeners = listeners
        self._on_first_catalog: Callable[[], object] | None = on_first_catalog

    def apply(self, catalog: Catalog) -> None:
        """Log what changed and reconcile health checks and listeners with ``catalog``, cut
        to the listener budget (a service refused a listener is not checked either)."""
        try:
            catalog = self._listeners.budgeted(catalog)
        except Exception:
            # A bug in the cut must not stop the catalog: apply it uncut, with the traceback.
            log.failure("listeners failed to budget the catalog")
        change = diff(self.catalog, catalog)
        for name in sorted(change.added):
            service = catalog.services[name]
            log.info(
                "service {service} appeared on port {port} with {count} backends",
                service=name,
                port=service.port,
                count=len(service.backends),
            )
        for name in sorted(change.removed):
            log.info("service {service} removed", service=name)
        for name in sorted(change.port_changed):
            log.info(
                "service {service} moved from port {old} to {new}",
                service=name,
                old=self.catalog.services[name].port,
                new=catalog.services[name].port,
            )
        for changed, verb in (
            (change.backends_added, "registered"),
            (change.backends_removed, "deregistered"),
        ):
            for name, backends in sorted(changed.items()):
                for backend in sorted(backends):
                    log.info(
                        "service {service}: backend {id} at {address} {verb}",
                        service=name,
                        id=backend.id,
                        address=str(backend.address),
                        verb=verb,
                    )
        self.catalog = catalog
        for name, consumer in (("health", self._checker), ("listeners", self._listeners)):
            try:
                consumer.reconcile(catalog)
            except Exception:
                # One consumer's bug must not keep the catalog from the other, nor stop the
                # watch: log it with its traceback and go on.
                log.failure("{consumer} failed to apply the catalog", consumer=name)
        if self._on_first_catalog is not None and catalog.services:
            first, self._on_first_catalog = self._on_first_catalog, None
            try:
                first()
            except Exception:
                log.failure("the first catalog's hook failed")


class _HTTPPoolService(Service):
    """Closes the etcd client's cached HTTP connections when ddiscover stops."""

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self._pool = pool

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._pool.closeCachedConnections()


class _OrderedStop(MultiService):
    """A ``MultiService`` that stops its children one at a time, the last added first, each
    once the one before it has finished (``MultiService`` stops them all at once).

    That is how the stats port outlives the drain: it is added before the listeners, so
    ``/health`` answers 503 "stopping" until the last proxied connection has closed.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_each())

    async def _stop_each(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {service} failed", service=child.name)


def build_service(
    config: Config,
    reactor: ProxyReactor,
    http: HTTPClientLike | None = None,
    endpoint_for: EndpointFactory | None = None,
    on_first_catalog: Callable[[], object] = lambda: None,
) -> MultiService:
    """Wire registry, health, proxy and stats together as one ``MultiService``.

    ``http`` and ``endpoint_for`` default to real ones on ``reactor``; tests pass fakes.
    ``on_first_catalog`` runs once, after the first catalog with a service was applied.
    """
    # One reactor, seen through each zope interface a part is typed with: mypy-zope cannot
    # spell "provides IReactorTCP and IReactorTime" as one type.
    clock = cast(IReactorTime, reactor)
    tcp = cast(IReactorTCP, reactor)
    started = clock.seconds()
    # Children stop in the reverse of the order they are added: registry, listeners (the
    # drain), health, stats, the etcd connection pool.
    root = _OrderedStop()
    children: list[tuple[str, Service]] = []
    forget_connections: Callable[[], object] | None = None
    if http is None:
        http, pool = build_http_client(tcp, config.etcd_access.tls, config.etcd_timeout)
        _HTTPPoolService(pool).setServiceParent(root)
        forget_connections = pool.closeCachedConnections
    checker = HealthChecker(
        clock,
        endpoint_for or tcp_endpoint_factory(tcp),
        interval=config.check_interval,
        rise=config.rise,
        fall=config.fall,
        connect_timeout=config.connect_timeout,
    )
    listeners = Listeners(reactor, config, checker)
    discovery = Discovery(checker, listeners, on_first_catalog)
    client = registry_client(
        config.etcd_access.api,
        http,
        clock,
        config.etcd,
        config.prefix,
        request_timeout=config.etcd_timeout,
        watch_timeout=config.watch_timeout,
        credentials=config.etcd_access.credentials,
        forget_connections=forget_connections or (lambda: None),
    )
    watcher = RegistryWatcher(
        client,
        clock,
        config.prefix,
        discovery.apply,
        sync_deadline=config.watch_timeout + config.etcd_timeout,
    )
    if config.stats_port:
        loop_lag = LoopLagProbe(clock)
        children.append(("loop-lag", loop_lag))
        description = (
            f"tcp:{config.stats_port}:interface={quoteStringArgument(config.stats_interface)}"
        )
        sources = StatsSources(
            clock=clock,
            config=config,
            watcher=watcher,
            checker=checker,
            listeners=listeners,
            started=started,
            loop_lag=loop_lag,
        )
        site = StatsSite(StatsRoot(sources), clock)
        children.append(
            ("stats", strports.service(description, site, reactor=cast(IReactorCore, reactor)))
        )
    children += [("health", checker), ("listeners", listeners), ("registry", watcher)]
    for name, child in children:
        child.setName(name)
        child.setServiceParent(root)
    return root
