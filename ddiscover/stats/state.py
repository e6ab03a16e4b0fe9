"""What the stats formats show, taken from the live parts in one go as frozen values.

:meth:`StatsSources.state` reads the watcher, the health checker, the listeners and the
counters at one instant of the reactor's clock and returns a :class:`StatsState`; everything
after that (:mod:`ddiscover.stats.rows`, the page, CSV, JSON, metrics) is a pure function of
it, so tests build a :class:`StatsState` by hand.  The counters are the live objects, read in
the same reactor turn.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Generator

import attrs
from twisted.internet.interfaces import IReactorTime

from ddiscover import __version__
from ddiscover.catalog import Backend, Rejection
from ddiscover.config import Config
from ddiscover.health.checker import HealthChecker
from ddiscover.health.state import HealthRecord
from ddiscover.loop_lag import LagReading, LoopLagProbe
from ddiscover.proxy.balancer import Admin
from ddiscover.proxy.counters import Counters
from ddiscover.proxy.listeners import Listeners
from ddiscover.registry.layout import PORT_KEY, Entry
from ddiscover.registry.watcher import RegistryWatcher
from ddiscover.text import clip


@attrs.frozen
class KeyState:
    """A registry key as ddiscover last read it: its path, the TTL etcd sent, and when."""

    path: str
    ttl: int | None = None
    seen_at: float | None = None


@attrs.frozen
class ServerState:
    """One backend of a service: what it is, its counters, its health and admin state."""

    backend: Backend
    key: KeyState
    counters: Counters
    health: HealthRecord | None
    admin: Admin = Admin.READY


@attrs.frozen
class ServiceState:
    """One service: its listener, counters and servers, and the keys of it that were ignored.

    A service the registry rejected as a whole (no port key, a port another service holds)
    has no listener and no counters: ``listener`` is the reason, ``counters`` is ``None``.
    """

    name: str
    port: int | None
    listener: str
    counters: Counters | None
    key: KeyState
    servers: tuple[ServerState, ...] = ()
    rejections: tuple[Rejection, ...] = ()


@attrs.frozen
class RegistryState:
    """The watch: which etcd, in what state since when, how far it has read."""

    api: str
    endpoint: str
    prefix: str
    state: str
    since: float
    last_index: int | None
    last_event_at: float | None
    events: int
    resyncs: int
    rejected_keys: int
    stray: tuple[Rejection, ...] = ()
    alive: bool = True
    in_sync: bool = True
    last_sync_at: float | None = None
    last_error: str | None = None


@attrs.frozen
class ProcessState:
    """The process: who, since when, under which limits, and the health-check settings."""

    version: str
    pid: int
    started: float
    fd_limit: int
    maxconn: int
    connections: int
    interface: str
    check_interval: float
    rise: int
    fall: int
    admin: bool
    loop_lag: LagReading | None = None


@attrs.frozen
class StatsState:
    """Everything the stats formats show, at time ``now`` on the reactor's clock."""

    now: float
    process: ProcessState
    registry: RegistryState
    services: tuple[ServiceState, ...]


SLICE = 100
"""Services :meth:`StatsSources.read_steps` reads per step."""


def _fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@attrs.frozen
class StatsSources:
    """The live parts the stats are read from, and the time ddiscover started."""

    clock: IReactorTime
    config: Config
    watcher: RegistryWatcher
    checker: HealthChecker
    listeners: Listeners
    started: float
    loop_lag: LoopLagProbe | None = None
    fd_limit: Callable[[], int] = _fd_limit
    pid: Callable[[], int] = os.getpid

    def state(self) -> StatsState:
        """Read every part now."""
        steps = self.read_steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                state: StatsState = done.value
                return state

    def read_steps(self) -> Generator[None, None, StatsState]:
        """Read every part, :data:`SLICE` services at a time: yields between, returns the state.

        The catalog's list of services is taken at the start; each service is read whole in
        one step (its counters are the live ones anyway, read again when rows are built).
        """
        now = self.clock.seconds()
        config, watcher = self.config, self.watcher
        prefix = config.prefix
        entries, seen = watcher.entries, watcher.seen

        def key_state(path: str) -> KeyState:
            entry: Entry | None = entries.get(path)
            return KeyState(path, entry.ttl if entry else None, seen.get(path))

        rejections = watcher.catalog.rejections
        by_service: dict[str, list[Rejection]] = {}
        stray: list[Rejection] = []
        for rejection in sorted(rejections, key=lambda r: r.key):
            name = _service_of(prefix, rejection.key, is_leaf=rejection.key in entries)
            if name is None:
                stray.append(rejection)
            else:
                by_service.setdefault(name, []).append(rejection)
        services: dict[str, ServiceState] = {}
        for count, (name, frontend) in enumerate(tuple(self.listeners.frontends().items()), 1):
            if count % SLICE == 0:
                yield None
            balancer = frontend.balancer
            servers = tuple(
                ServerState(
                    backend=backend,
                    key=key_state(f"{prefix}/{name}/{backend.id}"),
                    counters=frontend.servers[backend],
                    health=self.checker.record(backend.address),
                    admin=balancer.admin(backend),
                )
                for backend in balancer.backends
            )
            services[name] = ServiceState(
                name=name,
                port=frontend.port,
                listener=frontend.state,
                counters=frontend.counters,
                key=key_state(f"{prefix}/{name}/{PORT_KEY}"),
                servers=servers,
                rejections=tuple(by_service.pop(name, ())),
            )
        for name, ignored in by_service.items():
            whole = next((r for r in ignored if r.key == f"{prefix}/{name}"), None)
            services[name] = ServiceState(
                name=name,
                port=None,
                listener=whole.reason if whole else "not in the catalog",
                counters=None,
                key=key_state(f"{prefix}/{name}/{PORT_KEY}"),
                rejections=tuple(ignored),
            )
        return StatsState(
            now=now,
            process=ProcessState(
                version=__version__,
                pid=self.pid(),
                started=self.started,
                fd_limit=self.fd_limit(),
                maxconn=config.maxconn,
                connections=self.listeners.active,
                interface=config.interface,
                check_interval=config.check_interval,
                rise=config.rise,
                fall=config.fall,
                admin=config.stats_auth is not None,
                loop_lag=None if self.loop_lag is None else self.loop_lag.reading(),
            ),
            registry=RegistryState(
                api=watcher.api,
                endpoint=watcher.endpoint.to_text(),
                prefix=prefix,
                state=watcher.state.value,
                since=watcher.state_since,
                last_index=watcher.last_index,
                last_event_at=watcher.last_event_at,
                events=watcher.events,
                resyncs=watcher.resyncs,
                rejected_keys=len(rejections),
                stray=tuple(stray),
                alive=watcher.alive,
                in_sync=watcher.in_sync,
                last_sync_at=watcher.last_sync_at,
                last_error=last_error(watcher),
            ),
            services=tuple(services[name] for name in sorted(services)),
        )


def last_error(watcher: RegistryWatcher) -> str | None:
    """The watcher's last error as one clipped line, if it keeps one (``None`` if not)."""
    error = getattr(watcher, "last_error", None)
    return None if error is None else clip(str(error))


def _service_of(prefix: str, key: str, *, is_leaf: bool) -> str | None:
    """The service a rejected key belongs to, as the layout groups keys; ``None`` if none.

    A leaf key belongs to its directory; a rejected directory is the service itself.
    """
    under = prefix + "/"
    if not key.startswith(under):
        return None
    path = key[len(under) :]
    name = path.rpartition("/")[0] if is_leaf else path
    return name or None
