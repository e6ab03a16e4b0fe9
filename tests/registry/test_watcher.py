"""Tests for :mod:`ddiscover.registry.watcher` on a fake clock against the fake etcd."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Rejection, Service
from ddiscover.registry.layout import Entry
from ddiscover.registry.watcher import RegistryWatcher, WatchState
from tests.fake_etcd import FakeEtcdV2Resource
from tests.registry.test_etcd2 import v2_client

ENDPOINT = URL.from_text("http://etcd.test:2379")
WEB = Service("web", 80, frozenset({Backend("a", Address("10.0.0.1", 8080))}))
UNREACHABLE = "etcd {endpoint} unreachable: {error}; keeping the last known {services} services"
REACHABLE = "etcd {endpoint} reachable again; resynced"
IGNORING = "ignoring {key}: {reason}"
CLEARED = "etcd history no longer reaches index {index} ({error}); listing again"


def catalog(*services: Service, rejections: Iterable[Rejection] = ()) -> Catalog:
    """A catalog of ``services`` keyed by name (typed loosely for Catalog's dict converter)."""
    by_name: Any = {s.name: s for s in services}
    return Catalog(by_name, frozenset(rejections))


def backoff(attempt: int) -> float:
    """1, 2, 4, ... seconds: the shape of the default policy, without jitter."""
    return 2.0**attempt


class WatcherTestCase(SynchronousTestCase):
    """A watcher on a fake clock, reading the fake etcd through ``StubTreq``.

    ``history`` is how many events the fake etcd keeps.
    """

    history = 1000

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.etcd = FakeEtcdV2Resource(history=self.history)
        self.stub = StubTreq(self.etcd)
        self.client = v2_client(self.stub, self.clock, ENDPOINT)
        self.published: list[Catalog] = []
        self.watcher = self.make_watcher(self.published.append)
        self.logs = self.enterContext(capturedLogs())
        self.addCleanup(self.stop)

    def make_watcher(self, on_catalog: Callable[[Catalog], None]) -> RegistryWatcher:
        """A watcher of ``/backends`` through the test's client, publishing to ``on_catalog``."""
        return RegistryWatcher(
            self.client,
            self.clock,
            "/backends/",
            on_catalog,
            backoff=backoff,
            publish_window=0,
            rejection_grace=0,
        )

    def stop(self) -> None:
        """Stop the watcher and check it left nothing running."""
        self.assertIsNone(self.successResultOf(self.watcher.stopService()))
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.etcd.waiting, 0)
        self.assertIs(self.watcher.state, WatchState.STOPPED)

    def register_web(self) -> None:
        """Register service web on port 80 with backend a, and deliver the events."""
        self.etcd.set("/backends/web/port", "80")
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.stub.flush()

    def logged(self, format: str) -> list[LogEvent]:
        """The captured log events with this format."""
        return [e for e in self.logs if e.get("log_format") == format]

    def last_wait_index(self) -> int:
        """The waitIndex of the last request, which must be a wait."""
        uri = self.etcd.requests[-1]
        self.assertIn("wait=true", uri)
        return int(uri.rsplit("waitIndex=", 1)[1])


class StartTests(WatcherTestCase):
    """Starting lists etcd, publishes once, then waits from the listing's index + 1."""

    def test_empty(self) -> None:
        """An empty etcd still gives a first (empty) catalog."""
        self.watcher.startService()
        self.assertEqual(self.published, [Catalog()])
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertEqual(self.watcher.last_index, 3)
        self.assertEqual(self.last_wait_index(), 4)
        self.assertEqual(self.etcd.waiting, 1)

    def test_existing_services(self) -> None:
        """Services already registered are in the first catalog."""
        self.register_web()
        self.watcher.startService()
        self.assertEqual(self.published, [catalog(WEB)])
        self.assertEqual(self.watcher.catalog, catalog(WEB))
        self.assertEqual(
            dict(self.watcher.entries),
            {"/backends/web/port": Entry("80", 4), "/backends/web/a": Entry("10.0.0.1:8080", 5)},
        )
        self.assertEqual(self.last_wait_index(), 6)
        self.assertEqual(str(self.watcher.endpoint), "http://etcd.test:2379")

    def test_states(self) -> None:
        """The state is STOPPED before start and WATCHING from the time of the first sync."""
        self.assertIs(self.watcher.state, WatchState.STOPPED)
        self.clock.advance(5)
        self.watcher.startService()
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertEqual(self.watcher.state_since, 1005)


class EventTests(WatcherTestCase):
    """Each event updates the cached keys; a changed catalog is published."""

    def setUp(self) -> None:
        super().setUp()
        self.register_web()
        self.watcher.startService()
        del self.published[:]

    def test_new_backend(self) -> None:
        """A new backend key publishes a catalog with it, and the next wait follows the event."""
        self.clock.advance(3)
        index = self.etcd.set("/backends/web/b", "10.0.0.2:8080", ttl=15)
        self.stub.flush()
        backends = WEB.backends | {Backend("b", Address("10.0.0.2", 8080))}
        self.assertEqual(self.published, [catalog(Service("web", 80, backends))])
        self.assertEqual(
            self.watcher.entries["/backends/web/b"], Entry("10.0.0.2:8080", index, 15)
        )
        self.assertEqual(self.last_wait_index(), index + 1)
        self.assertEqual(self.watcher.events, 1)
        self.assertEqual(self.watcher.last_index, index)
        self.assertEqual(self.watcher.last_event_at, 1003)

    def test_same_value(self) -> None:
        """Re-setting a key to its value (docker-register's refresh) publishes nothing."""
        index = self.etcd.set("/backends/web/a", "10.0.0.1:8080", ttl=15)
        self.stub.flush()
        self.assertEqual(self.published, [])
        self.assertEqual(
            self.watcher.entries["/backends/web/a"], Entry("10.0.0.1:8080", index, 15)
        )
        self.assertEqual(self.watcher.events, 1)
        self.assertEqual(self.last_wait_index(), index + 1)

    def test_delete_backend(self) -> None:
        """Deleting a backend key publishes the service without it; its listener stays."""
        self.etcd.delete("/backends/web/a")
        self.stub.flush()
        self.assertEqual(self.published, [catalog(Service("web", 80))])
        self.assertNotIn("/backends/web/a", self.watcher.entries)

    def test_directory_delete(self) -> None:
        """Deleting a service directory drops every key under it, and only those."""
        self.etcd.set("/backends/web2/port", "81")
        self.etcd.set("/backends/web/v2/port", "82")
        self.stub.flush()
        self.etcd.delete("/backends/web")
        self.stub.flush()
        self.assertEqual(set(self.watcher.entries), {"/backends/web2/port"})
        self.assertEqual(self.published[-1], catalog(Service("web2", 81)))

    def test_port_key_expires(self) -> None:
        """The port key expiring while backends remain keeps the service on its port."""
        self.etcd.expire("/backends/web/port")
        self.stub.flush()
        self.assertEqual(self.published, [])
        self.assertEqual(self.watcher.catalog, catalog(WEB))
        self.etcd.expire("/backends/web/a")
        self.stub.flush()
        self.assertEqual(self.published, [Catalog()])

    def test_new_directory(self) -> None:
        """Creating an empty directory is counted but changes nothing."""
        self.etcd.mkdir("/backends/api")
        self.stub.flush()
        self.assertEqual(self.published, [])
        self.assertEqual(self.watcher.events, 1)

    def test_delete_unknown(self) -> None:
        """Deleting a directory with no cached keys publishes nothing."""
        self.etcd.mkdir("/backends/api")
        self.etcd.delete("/backends/api")
        self.stub.flush()
        self.assertEqual(self.published, [])

    def test_body_timeout(self) -> None:
        """A quiet watch is re-issued with the same index; nothing else happens."""
        index = self.last_wait_index()
        self.clock.advance(60)
        self.stub.flush()
        self.assertEqual(self.etcd.aborted, 1)
        self.assertEqual(self.last_wait_index(), index)
        self.assertEqual(self.etcd.waiting, 1)
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertEqual(self.published, [])

    def test_empty_wait(self) -> None:
        """A wait etcd ends empty is re-issued with the same index."""
        index = self.last_wait_index()
        self.etcd.end_waits_empty()
        self.stub.flush()
        self.assertEqual(self.last_wait_index(), index)
        self.assertEqual(self.watcher.events, 0)


class RejectionLogTests(WatcherTestCase):
    """Bad keys are logged once at error level, when they appear."""

    def test_once(self) -> None:
        """A rejection is logged when new, not while it persists, and again if it comes back."""
        self.register_web()
        self.etcd.set("/backends/web/bad", "1.2.3.4:99999")
        self.watcher.startService()
        reason = "value '1.2.3.4:99999' is not host:port: port '99999' is outside 1-65535"
        [event] = self.logged(IGNORING)
        self.assertEqual(
            (event["log_level"], event["key"], event["reason"]),
            (LogLevel.error, "/backends/web/bad", reason),
        )
        self.assertEqual(
            self.watcher.catalog.rejections, frozenset({Rejection("/backends/web/bad", reason)})
        )
        self.etcd.set("/backends/web/b", "10.0.0.2:80")
        self.stub.flush()
        self.assertEqual(len(self.logged(IGNORING)), 1)
        self.etcd.delete("/backends/web/bad")
        self.stub.flush()
        self.etcd.set("/backends/web/bad", "1.2.3.4:99999")
        self.stub.flush()
        self.assertEqual(len(self.logged(IGNORING)), 2)


class IndexClearedTests(WatcherTestCase):
    """A wait older than etcd's history leads to a full listing."""

    history = 5

    def setUp(self) -> None:
        super().setUp()
        self.register_web()
        self.watcher.startService()
        # The next wait never hears of the writes below, so its index falls out of history.
        self.etcd.stall_next()
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.stub.flush()

    def test_resync_with_changes(self) -> None:
        """A change pushed out of the history is found by the full listing and published."""
        self.etcd.set("/backends/api/port", "81")
        for n in range(6):
            self.etcd.set("/other/spam", str(n))
        self.clock.advance(60)
        self.stub.flush()
        self.assertEqual(
            self.published,
            [catalog(WEB), catalog(WEB, Service("api", 81))],
        )
        [event] = self.logged(CLEARED)
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(self.watcher.resyncs, 1)
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertEqual(self.last_wait_index(), self.etcd.index + 1)

    def test_resync_without_changes(self) -> None:
        """A resync that finds the same keys publishes nothing."""
        for n in range(6):
            self.etcd.set("/other/spam", str(n))
        self.clock.advance(60)
        self.stub.flush()
        self.assertEqual(self.published, [catalog(WEB)])
        self.assertEqual(self.watcher.resyncs, 1)
        self.assertEqual(self.last_wait_index(), self.etcd.index + 1)


class UnreachableTests(WatcherTestCase):
    """While etcd cannot be read, the last catalog stays and the watcher retries with backoff."""

    def test_at_start(self) -> None:
        """Failing first listings publish nothing, log once, and retry on the backoff schedule."""
        self.register_web()
        self.etcd.fail_next(500, b"", times=3)
        self.watcher.startService()
        self.assertEqual(self.published, [])
        self.assertIs(self.watcher.state, WatchState.UNREACHABLE)
        for delay in (1, 2):
            self.clock.advance(delay - 0.001)
            self.assertEqual(len(self.etcd.requests), delay)
            self.clock.advance(0.001)
            self.assertEqual(len(self.etcd.requests), delay + 1)
        self.assertEqual(self.published, [])
        [warning] = self.logged(UNREACHABLE)
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertEqual(warning["endpoint"], "http://etcd.test:2379")
        self.assertEqual(warning["error"], "HTTP 500")
        self.assertEqual(warning["services"], 0)
        self.clock.advance(4)
        self.assertEqual(self.published, [catalog(WEB)])
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        [info] = self.logged(REACHABLE)
        self.assertEqual(info["log_level"], LogLevel.info)

    def test_keeps_catalog(self) -> None:
        """A watch cut off keeps catalog and keys; recovery lists again and publishes the diff."""
        self.register_web()
        self.watcher.startService()
        self.clock.advance(10)
        self.etcd.fail_next(503, b"<html>busy</html>", times=2)
        self.etcd.cut_waits()
        self.stub.flush()
        self.assertIs(self.watcher.state, WatchState.UNREACHABLE)
        self.assertEqual(self.watcher.state_since, 1010)
        self.assertEqual(self.watcher.catalog, catalog(WEB))
        self.assertEqual(len(self.watcher.entries), 2)
        [warning] = self.logged(UNREACHABLE)
        self.assertEqual(warning["services"], 1)
        self.assertTrue(warning["error"].startswith("response cut off: "))
        self.etcd.delete("/backends/web/a")
        self.clock.advance(1)
        self.clock.advance(2)
        self.assertEqual(self.published, [catalog(WEB)])
        self.assertEqual(len(self.logged(UNREACHABLE)), 1)
        self.clock.advance(4)
        self.assertEqual(self.published, [catalog(WEB), catalog(Service("web", 80))])
        self.assertEqual(len(self.logged(REACHABLE)), 1)
        self.assertEqual(self.watcher.resyncs, 1)
        self.assertIs(self.watcher.state, WatchState.WATCHING)

    def test_fresh_data_dir(self) -> None:
        """An etcd back with a fresh data dir (a smaller index) is watched from its new index."""
        self.register_web()
        self.etcd.set("/other/a", "1")
        self.etcd.set("/other/b", "2")
        self.watcher.startService()
        self.assertEqual(self.last_wait_index(), 8)
        self.etcd.cut_waits()
        self.etcd.wipe()
        self.etcd.set("/backends/web/port", "80")
        self.stub.flush()
        self.clock.advance(1)
        self.assertEqual(self.published, [catalog(WEB), catalog(Service("web", 80))])
        self.assertEqual(self.last_wait_index(), 5)
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.stub.flush()
        self.assertEqual(self.published[-1], catalog(WEB))

    def test_any_registry_error(self) -> None:
        """A client error such as failed auth is also kept out of the catalog and retried."""
        self.register_web()
        self.watcher.startService()
        body = json.dumps({"errorCode": 110, "message": "Insufficient credentials"}).encode()
        self.etcd.fail_next(401, body, times=2)
        self.etcd.end_waits_empty()
        self.stub.flush()
        self.assertIs(self.watcher.state, WatchState.UNREACHABLE)
        [warning] = self.logged(UNREACHABLE)
        self.assertEqual(warning["error"], "HTTP 401 errorCode 110: Insufficient credentials")
        self.clock.advance(1)
        self.clock.advance(2)
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertEqual(self.published, [catalog(WEB)])


class StopTests(WatcherTestCase):
    """Stopping cancels whatever the watcher is waiting on."""

    def test_while_watching(self) -> None:
        """Stopping aborts the held wait; the cleanup checks nothing is left."""
        self.watcher.startService()
        self.assertEqual(self.etcd.waiting, 1)
        self.stop()
        self.assertEqual(self.etcd.aborted, 1)

    def test_while_backing_off(self) -> None:
        """Stopping during a backoff cancels the retry timer."""
        self.etcd.fail_next(500, b"")
        self.watcher.startService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.stop()
        self.assertEqual(len(self.etcd.requests), 1)

    def test_never_started(self) -> None:
        """Stopping a watcher that never started succeeds at once."""
        self.stop()


class ReentrantStopTests(WatcherTestCase):
    """on_catalog may stop the watcher while the watch loop is running, not waiting."""

    def test_stop_from_first_catalog(self) -> None:
        """Stopping from inside the first publish issues no wait and stops cleanly."""
        stopped: list[object] = []

        def stop_now(catalog: Catalog) -> None:
            self.watcher.stopService().addCallback(stopped.append)

        self.watcher = self.make_watcher(stop_now)
        self.watcher.startService()
        self.assertEqual(stopped, [None])
        self.assertEqual(self.etcd.requests, ["/v2/keys/backends?recursive=true"])
        self.assertIs(self.watcher.state, WatchState.STOPPED)

    def test_stop_from_event(self) -> None:
        """Stopping from inside a publish caused by an event issues no further wait."""
        stopped: list[object] = []

        def stop_on_web(catalog: Catalog) -> None:
            if "web" in catalog.services:
                self.watcher.stopService().addCallback(stopped.append)

        self.watcher = self.make_watcher(stop_on_web)
        self.watcher.startService()
        self.register_web()
        self.assertEqual(stopped, [None])
        self.assertEqual(len(self.etcd.requests), 2)
        self.assertIs(self.watcher.state, WatchState.STOPPED)


class SeenTests(WatcherTestCase):
    """Every key listed or set is noted at the reactor's time; removed keys are forgotten."""

    def test_listing_notes_every_key(self) -> None:
        """A listing replaces what was noted: every key in it is seen now."""
        self.etcd.set("/backends/web/port", "80")
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.etcd.set("/backends/api/x", "10.0.0.2:81")
        self.watcher.startService()
        self.stub.flush()
        self.assertEqual(
            dict(self.watcher.seen),
            dict.fromkeys(["/backends/web/port", "/backends/web/a", "/backends/api/x"], 1000.0),
        )

    def test_changes(self) -> None:
        """A set, even of an unchanged value, is seen at its time; a delete forgets the key;
        a directory delete forgets every key under it."""
        self.etcd.set("/backends/api/x", "10.0.0.2:81")
        self.register_web()
        self.watcher.startService()
        self.stub.flush()
        self.clock.advance(5)
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.stub.flush()
        self.etcd.delete("/backends/api/x")
        self.stub.flush()
        self.etcd.set("/backends/web/b", "10.0.0.3:8080")
        self.stub.flush()
        self.assertEqual(
            dict(self.watcher.seen),
            {"/backends/web/port": 1000.0, "/backends/web/a": 1005.0, "/backends/web/b": 1005.0},
        )
        self.etcd.delete("/backends/web")
        self.stub.flush()
        self.assertEqual(dict(self.watcher.seen), {})


class InSyncTests(WatcherTestCase):
    """``in_sync`` is true only while etcd has confirmed the view recently and the loop runs."""

    def test_listing_and_events_confirm(self) -> None:
        """A listing, then each change read, is a sync; the age counts from the last one."""
        self.assertFalse(self.watcher.in_sync)
        self.assertFalse(self.watcher.alive)
        self.watcher.startService()
        self.assertTrue(self.watcher.alive)
        self.assertTrue(self.watcher.in_sync)
        self.assertEqual(self.watcher.last_sync_at, 1000)
        self.clock.advance(30)
        self.register_web()
        self.assertEqual(self.watcher.last_sync_at, 1030)

    def test_unreachable_is_not_in_sync(self) -> None:
        """While etcd cannot be read the view is not in sync, even right after a good one."""
        self.watcher.startService()
        self.etcd.fail_next(503, b"", times=5)
        self.etcd.cut_waits()
        self.stub.flush()
        self.assertTrue(self.watcher.alive)
        self.assertFalse(self.watcher.in_sync)

    def test_stale_view_is_not_in_sync(self) -> None:
        """A watch that brought no news for longer than the deadline is not in sync."""
        self.watcher.startService()
        self.etcd.stall_next()
        self.clock.advance(65)
        self.assertTrue(self.watcher.in_sync)
        self.clock.advance(0.5)
        self.assertFalse(self.watcher.in_sync)

    def test_stopped_is_not_alive(self) -> None:
        """A stopped watcher is neither alive nor in sync."""
        self.watcher.startService()
        self.stop()
        self.assertFalse(self.watcher.alive)
        self.assertFalse(self.watcher.in_sync)
