"""The registry against a real etcd: live changes, TTLs, crashes, freezes and a cleared history.

Each test waits on Deferreds fired by what it waits for (a published catalog, a log event),
bounded by trial's timeout; nothing sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from hyperlink import URL
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ddiscover.catalog import Address, Backend, Catalog, Rejection
from ddiscover.registry.etcd2 import EtcdV2Client
from ddiscover.registry.watcher import RegistryWatcher, WatchState
from tests.integration.etcd import EtcdProcess
from tests.registry.test_etcd2 import EtcdV2ContractMixin

UNREACHABLE = "etcd {endpoint} unreachable: {error}; keeping the last known {services} services"
REACHABLE = "etcd {endpoint} reachable again; resynced"
CLEARED = "etcd history no longer reaches index {index} ({error}); listing again"
IGNORING = "ignoring {key}: {reason}"


class Published:
    """Records every published catalog, with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.catalogs: list[tuple[float, Catalog]] = []
        self._waiters: list[tuple[Callable[[Catalog], bool], Deferred[Catalog]]] = []

    def __call__(self, catalog: Catalog) -> None:
        self.catalogs.append((time.monotonic(), catalog))
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(catalog):
                self._waiters.remove(waiter)
                d.callback(catalog)

    def until(self, predicate: Callable[[Catalog], bool]) -> Deferred[Catalog]:
        """Fire with the first catalog, the current one included, for which ``predicate`` holds."""
        if self.catalogs and predicate(self.catalogs[-1][1]):
            return succeed(self.catalogs[-1][1])
        d: Deferred[Catalog] = Deferred()
        self._waiters.append((predicate, d))
        return d


def backends_of(catalog: Catalog, service: str) -> set[str]:
    """The ids of a service's backends (empty if the service is absent)."""
    found = catalog.services.get(service)
    return {b.id for b in found.backends} if found else set()


class RegistryEtcdTests(TestCase):
    """A RegistryWatcher on the real reactor, watching a real etcd child process."""

    timeout = 30

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=1))
        self.published = Published()

    def watch(self, request_timeout: float = 2.0, watch_timeout: float = 30.0) -> RegistryWatcher:
        """Start a watcher on ``/backends`` that retries every 50 ms; stopped in cleanup."""
        client = EtcdV2Client(
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
        """Write a service's port key and its backends, the docker-register way."""
        self.etcd.put(f"/backends/{service}/port", str(port))
        for id, address in backends.items():
            self.etcd.put(f"/backends/{service}/{id}", address)

    async def test_live_changes(self) -> None:
        """A backend appears and disappears within one long-poll round trip (well under 1 s)."""
        self.watch()
        await self.published.until(lambda c: True)
        self.etcd.put("/backends/web/port", "80")
        await self.published.until(lambda c: "web" in c.services)

        written = time.monotonic()
        self.etcd.put("/backends/web/abc", "127.0.0.1:8080")
        await self.published.until(lambda c: backends_of(c, "web") == {"abc"})
        appeared = self.published.catalogs[-1][0] - written

        written = time.monotonic()
        self.etcd.delete("/backends/web/abc")
        catalog = await self.published.until(lambda c: backends_of(c, "web") == set())
        disappeared = self.published.catalogs[-1][0] - written

        print(
            f"\netcd write -> on_catalog: add {appeared * 1000:.1f} ms, "
            f"delete {disappeared * 1000:.1f} ms"
        )
        self.assertLess(max(appeared, disappeared), 1.0)
        self.assertEqual(catalog.services["web"].port, 80)

    async def test_directory_delete(self) -> None:
        """Deleting a service directory removes that service and only it."""
        self.register("web", 80, a="10.0.0.1:80", b="10.0.0.2:80")
        self.register("api", 81, x="10.0.0.3:81")
        self.watch()
        await self.published.until(lambda c: set(c.services) == {"web", "api"})
        self.etcd.delete("/backends/web", recursive=True)
        catalog = await self.published.until(lambda c: "web" not in c.services)
        self.assertEqual(set(catalog.services), {"api"})
        self.assertEqual(backends_of(catalog, "api"), {"x"})

    async def test_ttl_expiry(self) -> None:
        """A backend registered with a 2 s TTL and not refreshed disappears on its own."""
        self.register("web", 80)
        self.etcd.put("/backends/web/abc", "10.0.0.1:80", ttl=2)
        watcher = self.watch()
        await self.published.until(lambda c: backends_of(c, "web") == {"abc"})
        self.assertIn(watcher.entries["/backends/web/abc"].ttl, (1, 2))
        catalog = await self.published.until(lambda c: backends_of(c, "web") == set())
        self.assertEqual(catalog.services["web"].port, 80)

    async def test_killed_and_restarted(self) -> None:
        """A killed etcd keeps the last catalog; after its restart a new change arrives."""
        self.register("web", 80, a="10.0.0.1:80")
        watcher = self.watch()
        before = await self.published.until(lambda c: "web" in c.services)
        published = len(self.published.catalogs)

        unreachable = self.logged(UNREACHABLE)
        self.etcd.kill()
        warning = await unreachable
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertEqual(warning["services"], 1)
        self.assertIs(watcher.state, WatchState.UNREACHABLE)
        self.assertEqual(watcher.catalog, before)

        reachable = self.logged(REACHABLE)
        self.etcd.restart()
        await reachable
        self.assertIs(watcher.state, WatchState.WATCHING)
        self.assertEqual(len(self.published.catalogs), published)

        self.etcd.put("/backends/web/b", "10.0.0.2:80")
        catalog = await self.published.until(lambda c: backends_of(c, "web") == {"a", "b"})
        self.assertEqual(catalog.services["web"].port, 80)

    async def test_frozen(self) -> None:
        """A frozen etcd (SIGSTOP) is noticed by the client's own timeouts; thawing heals."""
        self.register("web", 80, a="10.0.0.1:80")
        watcher = self.watch(request_timeout=0.3, watch_timeout=0.6)
        before = await self.published.until(lambda c: "web" in c.services)

        unreachable = self.logged(UNREACHABLE)
        self.etcd.freeze()
        warning = await unreachable
        self.assertIs(watcher.state, WatchState.UNREACHABLE)
        self.assertEqual(watcher.catalog, before)
        self.assertIn("within 0.3s", warning["error"])

        reachable = self.logged(REACHABLE)
        self.etcd.thaw()
        await reachable
        self.assertIs(watcher.state, WatchState.WATCHING)
        self.etcd.put("/backends/web/b", "10.0.0.2:80")
        await self.published.until(lambda c: backends_of(c, "web") == {"a", "b"})

    async def test_index_cleared(self) -> None:
        """A wait from an index etcd no longer has (1100 later writes) leads to a full resync."""
        self.register("web", 80, a="10.0.0.1:80")
        watcher = self.watch()
        await self.published.until(lambda c: "web" in c.services)
        cleared = self.logged(CLEARED)
        # The reactor does not run during these blocking writes: the watcher hears of the
        # first, and asks for the next only after the 1100 others pushed it out of history.
        self.etcd.put("/backends/api/port", "81")
        self.etcd.put("/backends/api/x", "10.0.0.3:81")
        for n in range(1100):
            self.etcd.put("/other/spam", str(n))
        event = await cleared
        self.assertEqual(event["log_level"], LogLevel.info)
        catalog = await self.published.until(lambda c: backends_of(c, "api") == {"x"})
        self.assertEqual(backends_of(catalog, "web"), {"a"})
        self.assertEqual(watcher.resyncs, 1)
        self.assertIs(watcher.state, WatchState.WATCHING)

    async def test_bad_values(self) -> None:
        """Bad values are rejected and logged once each, while a good service stays in."""
        errors: list[LogEvent] = []

        def observe(event: LogEvent) -> None:
            if event.get("log_format") == IGNORING:
                errors.append(event)

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.register("web", 80, a="10.0.0.1:80")
        self.watch()
        await self.published.until(lambda c: "web" in c.services)
        self.etcd.put("/backends/web/b", "abc")
        self.etcd.put("/backends/web/c", "1.2.3.4:99999")
        self.etcd.put("/backends/api/port", "http")
        self.etcd.put("/backends/api/x", "10.0.0.3:81")
        catalog = await self.published.until(lambda c: len(c.rejections) == 4)
        self.assertEqual(
            catalog.rejections,
            frozenset(
                {
                    Rejection("/backends/web/b", "value 'abc' is not host:port: no ':port'"),
                    Rejection(
                        "/backends/web/c",
                        "value '1.2.3.4:99999' is not host:port: port '99999' is outside 1-65535",
                    ),
                    Rejection("/backends/api/port", "port 'http' is not a number"),
                    Rejection("/backends/api", "no port key"),
                }
            ),
        )
        self.assertEqual(set(catalog.services), {"web"})
        self.assertEqual(
            catalog.services["web"].backends, frozenset({Backend("a", Address("10.0.0.1", 80))})
        )
        self.assertEqual(
            sorted(e["key"] for e in errors), sorted(r.key for r in catalog.rejections)
        )
        self.assertTrue(all(e["log_level"] is LogLevel.error for e in errors))


class RealEtcdV2ContractTests(EtcdV2ContractMixin, TestCase):
    """The client contract the fake etcd is checked against, run against the real etcd."""

    timeout = 30

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.client = EtcdV2Client(
            HTTPClient(Agent(reactor, pool=pool, connectTimeout=1)),
            reactor,
            [URL.from_text(self.etcd.url)],
            "/backends",
            request_timeout=2.0,
            watch_timeout=10.0,
        )

    def put(self, key: str, value: str, ttl: int | None = None) -> int:
        """Set a key in etcd; its modifiedIndex."""
        index: int = self.etcd.put(key, value, ttl=ttl)["node"]["modifiedIndex"]
        return index

    def remove(self, key: str, recursive: bool = False) -> int:
        """Delete a key or directory tree in etcd; the event's index."""
        index: int = self.etcd.delete(key, recursive=recursive)["node"]["modifiedIndex"]
        return index

    def deliver(self) -> None:
        """Nothing to do: the reactor delivers what etcd sends."""
