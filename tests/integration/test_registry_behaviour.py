"""The registry's core behaviour against a real etcd, once through v2 and once through v3.

:class:`RegistryBehaviourMixin` is one suite written against a small writer interface; each
API gets a subclass whose writer uses that API's own calls (v2 TTLs and directory deletes, v3
leases, prefix deletes and compaction).  The v3 client's contract, also run against the fake
gateway in ``tests/registry/test_etcd3.py``, is checked here against the real one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from hyperlink import URL
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ddiscover.catalog import Rejection
from ddiscover.registry.api import registry_client
from ddiscover.registry.client import EtcdHTTP
from ddiscover.registry.etcd3 import EtcdV3Client
from ddiscover.registry.watcher import RegistryWatcher, WatchState
from tests.integration.etcd import EtcdProcess
from tests.integration.registry_support import Published, backends_of
from tests.registry.test_etcd3 import EtcdV3ContractMixin

UNREACHABLE = "etcd {endpoint} unreachable: {error}; keeping the last known {services} services"
REACHABLE = "etcd {endpoint} reachable again; resynced"
CLEARED = "etcd history no longer reaches index {index} ({error}); listing again"
CHOSEN = "etcd {endpoint} serves the {api} API; using it"

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


def _http(test: TestCase) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=True)
    test.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool, connectTimeout=1))


class RegistryBehaviourMixin(_Base):
    """What ddiscover promises about etcd, whichever API carries it.

    Subclasses set :attr:`api` and implement the writer methods with that API's calls.
    """

    timeout = 30
    api: str

    def put(self, key: str, value: str) -> None:
        raise NotImplementedError

    def remove(self, key: str) -> None:
        raise NotImplementedError

    def remove_service(self, name: str) -> None:
        raise NotImplementedError

    def put_expiring(self, key: str, value: str, ttl: int) -> None:
        raise NotImplementedError

    def lose_history(self) -> None:
        """Make etcd forget the history a watch that is behind would need."""
        raise NotImplementedError

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        self.http = _http(self)
        self.published = Published()

    def watch(self, request_timeout: float = 2.0, watch_timeout: float = 30.0) -> RegistryWatcher:
        """A started watcher of ``/backends`` through :attr:`api`; retries every 50 ms."""
        client = registry_client(
            self.api,
            self.http,
            reactor,
            [URL.from_text(self.etcd.url)],
            "/backends",
            request_timeout=request_timeout,
            watch_timeout=watch_timeout,
        )
        watcher = RegistryWatcher(
            client, reactor, "/backends", self.published, backoff=lambda attempt: 0.05
        )
        watcher.startService()
        self.addCleanup(watcher.stopService)
        return watcher

    def logged(self, format: str) -> Deferred[LogEvent]:
        """Fire with the next log event that has this format."""
        d: Deferred[LogEvent] = Deferred()

        def observe(event: LogEvent) -> None:
            if event.get("log_format") == format and not d.called:
                d.callback(event)

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return d

    def register(self, service: str, port: int, **backends: str) -> None:
        self.put(f"/backends/{service}/port", str(port))
        for id, address in backends.items():
            self.put(f"/backends/{service}/{id}", address)

    async def test_live_changes(self) -> None:
        """A backend appears and disappears within a fraction of a second."""
        watcher = self.watch()
        await self.published.until(lambda c: True)
        self.assertEqual(watcher.api, self.api)
        self.put("/backends/web/port", "80")
        await self.published.until(lambda c: "web" in c.services)
        written = time.monotonic()
        self.put("/backends/web/abc", "127.0.0.1:8080")
        await self.published.until(lambda c: backends_of(c, "web") == {"abc"})
        self.remove("/backends/web/abc")
        catalog = await self.published.until(lambda c: backends_of(c, "web") == set())
        self.assertLess(time.monotonic() - written, 1.0)
        self.assertEqual(catalog.services["web"].port, 80)

    async def test_service_removed(self) -> None:
        """Removing a whole service removes it and only it."""
        self.register("web", 80, a="10.0.0.1:80", b="10.0.0.2:80")
        self.register("api", 81, x="10.0.0.3:81")
        self.watch()
        await self.published.until(lambda c: set(c.services) == {"web", "api"})
        self.remove_service("web")
        catalog = await self.published.until(lambda c: "web" not in c.services)
        self.assertEqual(set(catalog.services), {"api"})

    async def test_expiry(self) -> None:
        """A backend whose TTL or lease runs out disappears on its own."""
        self.register("web", 80)
        self.put_expiring("/backends/web/abc", "10.0.0.1:80", 2)
        self.watch()
        await self.published.until(lambda c: backends_of(c, "web") == {"abc"})
        catalog = await self.published.until(lambda c: backends_of(c, "web") == set())
        self.assertEqual(catalog.services["web"].port, 80)

    async def test_killed_and_restarted(self) -> None:
        """A killed etcd keeps the last catalog; after its restart changes flow again."""
        self.register("web", 80, a="10.0.0.1:80")
        watcher = self.watch()
        before = await self.published.until(lambda c: "web" in c.services)
        unreachable = self.logged(UNREACHABLE)
        self.etcd.kill()
        await unreachable
        self.assertEqual(watcher.catalog, before)
        reachable = self.logged(REACHABLE)
        self.etcd.restart()
        await reachable
        self.put("/backends/web/b", "10.0.0.2:80")
        await self.published.until(lambda c: backends_of(c, "web") == {"a", "b"})

    async def test_frozen(self) -> None:
        """A frozen etcd is noticed by the client's own timeouts; thawing heals."""
        self.register("web", 80, a="10.0.0.1:80")
        watcher = self.watch(request_timeout=0.3, watch_timeout=0.6)
        before = await self.published.until(lambda c: "web" in c.services)
        unreachable = self.logged(UNREACHABLE)
        self.etcd.freeze()
        await unreachable
        self.assertEqual(watcher.catalog, before)
        reachable = self.logged(REACHABLE)
        self.etcd.thaw()
        await reachable
        self.put("/backends/web/b", "10.0.0.2:80")
        await self.published.until(lambda c: backends_of(c, "web") == {"a", "b"})

    async def test_history_lost(self) -> None:
        """A watch behind etcd's history (v2: 1000 events; v3: compaction) lists again."""
        self.register("web", 80, a="10.0.0.1:80")
        watcher = self.watch(watch_timeout=0.5)
        await self.published.until(lambda c: "web" in c.services)
        cleared = self.logged(CLEARED)
        # Blocking writes: the watch hears only what it already asked for.
        self.put("/backends/api/port", "81")
        self.put("/backends/api/x", "10.0.0.3:81")
        self.lose_history()
        event = await cleared
        self.assertEqual(event["log_level"], LogLevel.info)
        catalog = await self.published.until(lambda c: backends_of(c, "api") == {"x"})
        self.assertEqual(backends_of(catalog, "web"), {"a"})
        self.assertIs(watcher.state, WatchState.WATCHING)

    async def test_bad_values(self) -> None:
        """Bad values are rejected one by one while a good service stays in."""
        self.register("web", 80, a="10.0.0.1:80")
        self.watch()
        await self.published.until(lambda c: "web" in c.services)
        self.put("/backends/web/b", "abc")
        self.put("/backends/api/port", "http")
        catalog = await self.published.until(lambda c: len(c.rejections) == 2)
        self.assertEqual(
            catalog.rejections,
            frozenset(
                {
                    Rejection("/backends/web/b", "value 'abc' is not host:port: no ':port'"),
                    Rejection("/backends/api/port", "port 'http' is not a number"),
                }
            ),
        )
        self.assertEqual(backends_of(catalog, "web"), {"a"})


class V2BehaviourTests(RegistryBehaviourMixin, TestCase):
    """The behaviour through the v2 keys API."""

    api = "v2"

    def put(self, key: str, value: str) -> None:
        self.etcd.put(key, value)

    def remove(self, key: str) -> None:
        self.etcd.delete(key)

    def remove_service(self, name: str) -> None:
        self.etcd.delete(f"/backends/{name}", recursive=True)

    def put_expiring(self, key: str, value: str, ttl: int) -> None:
        self.etcd.put(key, value, ttl=ttl)

    def lose_history(self) -> None:
        for n in range(1001):
            self.etcd.put("/other/spam", str(n))


class V3BehaviourTests(RegistryBehaviourMixin, TestCase):
    """The behaviour through the v3 gateway."""

    api = "v3"

    def put(self, key: str, value: str) -> None:
        self.etcd.put3(key, value)

    def remove(self, key: str) -> None:
        self.etcd.delete3(key)

    def remove_service(self, name: str) -> None:
        self.etcd.delete3(f"/backends/{name}/", prefix=True)

    def put_expiring(self, key: str, value: str, ttl: int) -> None:
        self.etcd.put3(key, value, lease=self.etcd.grant(ttl))

    def lose_history(self) -> None:
        for n in range(3):
            revision = self.etcd.put3("/other/spam", str(n))
        self.etcd.compact(revision)


class AutoDetectionTests(TestCase):
    """``--etcd-api auto`` picks v2 on an etcd that serves it."""

    timeout = 30

    async def test_picks_v2(self) -> None:
        """etcd 3.4 with --enable-v2 answers /v2/keys, so v2 is chosen and logged."""
        etcd = EtcdProcess.started(self)
        etcd.put("/backends/web/port", "80")
        published = Published()
        client = registry_client(
            "auto",
            _http(self),
            reactor,
            [URL.from_text(etcd.url)],
            "/backends",
            request_timeout=2.0,
            watch_timeout=30.0,
        )
        chosen: list[LogEvent] = []
        observer = cast(
            ILogObserver, lambda e: chosen.append(e) if e.get("log_format") == CHOSEN else None
        )
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        watcher = RegistryWatcher(client, reactor, "/backends", published)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        await published.until(lambda c: "web" in c.services)
        self.assertEqual(watcher.api, "v2")
        self.assertEqual([e["api"] for e in chosen], ["v2"])


class RealEtcdV3ContractTests(EtcdV3ContractMixin, TestCase):
    """The v3 client contract the fake gateway is checked against, run against the real one."""

    timeout = 30

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        etcd = EtcdHTTP(_http(self), reactor, [URL.from_text(self.etcd.url)], request_timeout=2.0)
        self.client = EtcdV3Client(etcd, "/backends", watch_timeout=10.0)

    def put(self, key: str, value: str) -> int:
        return self.etcd.put3(key, value)

    def remove(self, key: str) -> int:
        return self.etcd.delete3(key)

    def compact(self, revision: int) -> None:
        self.etcd.compact(revision)

    def deliver(self) -> None:
        """Nothing to do: the reactor delivers what etcd sends."""
