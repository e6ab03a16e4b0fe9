"""Tests of the stats formats, and what they share: a fixed state and a running ddiscover.

:func:`fixed_state` is one instant of a ddiscover with every kind of row: a service ``web``
whose servers are UP, going down, going up, DOWN, drained, in maintenance and not checked
yet; a service whose port could not be bound; one the registry rejected for a port conflict;
and a key outside any service.  :class:`Running` is a whole ddiscover on fakes, for the
tests that read live parts and serve them over HTTP.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import attrs
from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ddiscover.app import build_service
from ddiscover.catalog import Address, Backend, Rejection
from ddiscover.config import Config
from ddiscover.health.result import CheckResult, CheckStatus
from ddiscover.health.state import HealthRecord
from ddiscover.proxy.balancer import Admin
from ddiscover.proxy.counters import Counters, SessionRate
from ddiscover.proxy.listeners import Listeners
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.registry.client import HTTPClientLike
from ddiscover.stats.state import (
    KeyState,
    ProcessState,
    RegistryState,
    ServerState,
    ServiceState,
    StatsState,
)
from ddiscover.stats.web import StatsRoot
from tests.fake_endpoints import FakeEndpoints
from tests.fake_etcd import FakeEtcdV2Resource
from tests.proxy import PortsReactor

T = TypeVar("T")

NOW = 10_000.0
REFUSED = CheckResult(CheckStatus.L4CON, "Connection refused", 0.0004)
PASSED = CheckResult(CheckStatus.L4OK, "", 0.0012)
AUTH = ("admin", "s3cret")
STATS = "http://127.0.0.1:1936"
UP = Address("10.0.0.1", 8080)
DOWN = Address("10.0.0.2", 8080)


def record(health: int, **changes: Any) -> HealthRecord:
    """A checked rise 2 / fall 2 record at ``health`` (0..3), last changed 14 s ago."""
    fields: dict[str, Any] = {
        "rise": 2,
        "fall": 2,
        "health": health,
        "checked": True,
        "last": PASSED if health >= 2 else REFUSED,
        "changed_at": NOW - 14,
        "failures": 0,
        "downs": 0,
        "downtime": 0.0,
    }
    fields.update(changes)
    return HealthRecord(**fields)


def server(
    name: str,
    port: int,
    health: HealthRecord | None,
    admin: Admin = Admin.READY,
    **counters: Any,
) -> ServerState:
    """A server ``name`` of service ``web`` at 10.0.0.1:``port``, its key read 3 s ago."""
    return ServerState(
        backend=Backend(name, Address("10.0.0.1", port)),
        key=KeyState(f"/backends/web/{name}", ttl=15, seen_at=NOW - 3),
        counters=Counters(**counters),
        health=health,
        admin=admin,
    )


def fixed_state(**changes: Any) -> StatsState:
    """The state described in the module docstring; ``changes`` replace top-level fields."""
    web_counters = Counters(
        scur=3,
        smax=9,
        stot=120,
        bin=4000,
        bout=250_000,
        econ=1,
        wretr=0,
        wredis=2,
        cli_abrt=1,
        srv_abrt=2,
        rate=SessionRate(second=int(NOW), current=4, previous=0, max=7),
        last_session=NOW - 1,
    )
    web = ServiceState(
        name="web",
        port=8080,
        listener="OPEN",
        counters=web_counters,
        key=KeyState("/backends/web/port", ttl=None, seen_at=NOW - 60),
        servers=(
            server("a-up", 9001, record(3), scur=2, smax=5, stot=70, bin=2500, bout=150_000),
            server("b-going-down", 9002, record(2, failures=1, last=REFUSED), scur=1, stot=40),
            server("c-going-up", 9003, record(1, downs=1, downtime=30.0, failures=3)),
            server("d-down", 9004, record(0, downs=2, failures=4), econ=1, stot=10, wredis=2),
            server("e-drained", 9005, record(3), Admin.DRAIN),
            server("f-maint", 9006, record(3), Admin.MAINT),
            server("g-new", 9007, attrs.evolve(record(1), checked=False, last=None)),
            server("h-unknown", 9008, None),
        ),
        rejections=(Rejection("/backends/web/broken", "value 'x' is not host:port"),),
    )
    busy = ServiceState(
        name="busy",
        port=80,
        listener="cannot listen on 0.0.0.0:80: [Errno 98] Address already in use",
        counters=Counters(),
        key=KeyState("/backends/busy/port", ttl=None, seen_at=NOW - 60),
    )
    clash = ServiceState(
        name="clash",
        port=None,
        listener="port 8080 is already used by service web",
        counters=None,
        key=KeyState("/backends/clash/port", ttl=None, seen_at=NOW - 60),
        rejections=(Rejection("/backends/clash", "port 8080 is already used by service web"),),
    )
    state = StatsState(
        now=NOW,
        process=ProcessState(
            version="9.9.9",
            pid=4242,
            started=NOW - 3723,
            fd_limit=65536,
            maxconn=4096,
            connections=3,
            interface="0.0.0.0",
            check_interval=2.0,
            rise=2,
            fall=2,
            admin=False,
        ),
        registry=RegistryState(
            api="v2",
            endpoint="http://127.0.0.1:2379",
            prefix="/backends",
            state="watching",
            since=NOW - 600,
            last_index=1234,
            last_event_at=NOW - 5,
            events=57,
            resyncs=1,
            rejected_keys=3,
            stray=(Rejection("/backends/stray", "key is not inside a service directory"),),
        ),
        services=(busy, clash, web),
    )
    return attrs.evolve(state, **changes)


class Running:
    """ddiscover built by ``build_service`` on fakes (etcd, reactor, check endpoints).

    Service ``web`` listens on port 80 with backends ``a1`` (UP, a 30 s TTL) and ``a2``
    (DOWN); ``stub`` is ``StubTreq`` over the stats resource it serves.
    """

    def __init__(self, test: SynchronousTestCase, **config: Any) -> None:
        self.test = test
        self.etcd = FakeEtcdV2Resource()
        self.etcd_http = StubTreq(self.etcd)
        self.reactor = PortsReactor()
        endpoints = FakeEndpoints()
        root = build_service(
            Config(etcd=(URL.from_text("http://etcd.test:2379"),), check_interval=2.0, **config),
            cast(ProxyReactor, self.reactor),
            http=cast(HTTPClientLike, self.etcd_http),
            endpoint_for=endpoints,
        )
        self.etcd.set("/backends/web/port", "80")
        self.etcd.set("/backends/web/a1", str(UP), ttl=30)
        self.etcd.set("/backends/web/a2", str(DOWN))
        root.startService()
        test.addCleanup(root.stopService)
        self.etcd_http.flush()
        self.reactor.advance(0.2)
        endpoints.last(UP).succeed()
        endpoints.last(DOWN).refuse()
        self.reactor.advance(10)
        listeners = root.getServiceNamed("listeners")
        assert isinstance(listeners, Listeners)
        self.listeners = listeners
        (site,) = [s[1] for s in self.reactor.tcpServers if isinstance(s[1], Site)]
        assert isinstance(site.resource, StatsRoot)
        self.root = site.resource
        # Any: StubTreq makes its request methods at run time.
        self.stub: Any = StubTreq(site.resource)

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, list[str]], str]:
        """GET ``path``: status, headers (lower-case names) and body text."""
        return self.request("GET", path, **kwargs)

    def request(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, dict[str, list[str]], str]:
        kwargs.setdefault("allow_redirects", False)
        response = self.test.successResultOf(
            self.pump(self.stub.request(method, STATS + path, **kwargs))
        )
        body = self.test.successResultOf(self.pump(response.text()))
        headers = {
            name.decode().lower(): [v.decode() for v in values]
            for name, values in response.headers.getAllRawHeaders()
        }
        return response.code, headers, body

    def pump(self, result: Deferred[T]) -> Deferred[T]:
        """Run the reactor's turns at this instant until ``result`` fires (a sliced body)."""
        fired: list[object] = []

        def done(outcome: object) -> object:
            fired.append(outcome)
            return outcome

        result.addBoth(done)
        self.stub.flush()
        while not fired and any(
            call.getTime() <= self.reactor.seconds() for call in self.reactor.getDelayedCalls()
        ):
            self.reactor.advance(0)
            self.stub.flush()
        return result

    def admin(self, server: str) -> Admin:
        frontend = self.listeners.frontends()["web"]
        (backend,) = [b for b in frontend.balancer.backends if b.id == server]
        return frontend.balancer.admin(backend)
