"""The watch loop is supervised: every failure is logged once, backed off and resynced.

A fake client whose Deferreds the test fires by hand stands in for etcd, so each kind of
exception can be raised exactly where a real client or consumer would raise it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog
from ddiscover.registry.errors import IndexCleared, RegistryError
from ddiscover.registry.layout import Entry
from ddiscover.registry.values import Change, ChangeHandler, Snapshot
from ddiscover.registry.watcher import RegistryWatcher, WatchState

ENDPOINT = URL.from_text("http://etcd.test:2379")
FAILED = "the etcd watch failed ({error}); backing off, then listing again"
WEB_KEYS = {"/backends/web/port": Entry("80", 1), "/backends/web/a": Entry("10.0.0.1:8080", 2)}
B = Backend("b", Address("10.0.0.2", 8080))


def put(key: str, value: str, index: int) -> Change:
    """A v3-like put of ``key``."""
    return Change("put", key, False, Entry(value, index), index)


class FakeClient:
    """A registry client whose listings and watches the test answers by hand."""

    endpoint = ENDPOINT
    api = "v3"

    def __init__(self) -> None:
        self.snapshots: list[Deferred[Snapshot]] = []
        self.watches: list[tuple[int, ChangeHandler, Deferred[None]]] = []

    async def snapshot(self) -> Snapshot:
        """A listing the test fires through :attr:`snapshots`."""
        d: Deferred[Snapshot] = Deferred()
        self.snapshots.append(d)
        return await d

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """A watch the test feeds through the handler in :attr:`watches`."""
        d: Deferred[None] = Deferred()
        self.watches.append((index, on_changes, d))
        await d


class SupervisionTests(SynchronousTestCase):
    """For each kind of failure the loop logs once, backs off, lists again and goes on."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FakeClient()
        self.published: list[Catalog] = []
        self.consumer: Callable[[Catalog], None] = self.published.append
        self.logs = self.enterContext(capturedLogs())
        self.watcher = RegistryWatcher(
            self.client,
            self.clock,
            "/backends",
            self.publish,
            backoff=lambda attempt: 2.0**attempt,
            publish_window=0,
            rejection_grace=0,
        )
        self.watcher.startService()
        self.addCleanup(self.stop)

    def publish(self, catalog: Catalog) -> None:
        """Hand ``catalog`` to the consumer of the moment."""
        self.consumer(catalog)

    def stop(self) -> None:
        """Stop the watcher and check nothing is left scheduled."""
        self.successResultOf(self.watcher.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def failures(self) -> list[LogEvent]:
        """The tracebacks logged for unexpected failures."""
        return [e for e in self.logs if e.get("log_format") == FAILED]

    def list_web(self) -> None:
        """Answer the pending listing with service web and one backend, at index 10."""
        self.client.snapshots[-1].callback(Snapshot(10, dict(WEB_KEYS)))

    def assert_backing_off(self, error: str) -> None:
        """The loop is alive, backing off, not in sync, and says why."""
        self.assertIs(self.watcher.state, WatchState.BACKING_OFF)
        self.assertTrue(self.watcher.alive)
        self.assertFalse(self.watcher.in_sync)
        self.assertEqual(self.watcher.last_error, error)
        [event] = self.failures()
        self.assertEqual(event["error"], error)
        self.assertIsNotNone(event["log_failure"])

    def assert_recovers(self, listings: int, delay: float = 1.0) -> None:
        """After ``delay`` the loop lists again, then applies a later change."""
        if delay:
            self.clock.advance(delay - 0.001)
            self.assertEqual(len(self.client.snapshots), listings - 1)
            self.clock.advance(0.001)
        self.assertEqual(len(self.client.snapshots), listings)
        self.list_web()
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertTrue(self.watcher.in_sync)
        self.assertIsNone(self.watcher.last_error)
        index, on_changes, _ = self.client.watches[-1]
        self.assertEqual(index, 11)
        on_changes([put("/backends/web/b", "10.0.0.2:8080", 11)], 11)
        self.assertIn(B, self.watcher.catalog.services["web"].backends)
        self.assertIs(self.published[-1], self.watcher.catalog)

    def test_recursion_error_in_listing(self) -> None:
        """A decoder's RecursionError in the first listing does not end the loop."""
        self.client.snapshots[-1].errback(RecursionError("maximum recursion depth exceeded"))
        self.assert_backing_off("RecursionError: maximum recursion depth exceeded")
        self.assertEqual(self.published, [])
        self.assert_recovers(2)
        self.assertEqual(len(self.flushLoggedErrors(RecursionError)), 1)

    def test_key_error_in_watch(self) -> None:
        """A KeyError out of a watch is logged once, then the loop resyncs."""
        self.list_web()
        self.client.watches[-1][2].errback(KeyError("kv"))
        self.assert_backing_off("KeyError: 'kv'")
        self.assert_recovers(2)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_same_error_logged_once(self) -> None:
        """The same failure on every retry logs one traceback, not one per attempt."""
        for _ in range(3):
            self.client.snapshots[-1].errback(ValueError("bad body"))
            self.clock.advance(10)
        self.assertEqual(len(self.failures()), 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(self.client.snapshots), 4)

    def test_consumer_bug(self) -> None:
        """A consumer raising is logged, the watch is cut, and the resync publishes again."""
        self.list_web()
        calls: list[Catalog] = []

        def broken(catalog: Catalog) -> None:
            calls.append(catalog)
            raise ZeroDivisionError("consumer bug")

        self.consumer = broken
        _, on_changes, pending = self.client.watches[-1]
        on_changes([put("/backends/web/b", "10.0.0.2:8080", 11)], 11)
        self.assertEqual(len(calls), 1)
        self.assertTrue(pending.called)
        self.assert_backing_off("ZeroDivisionError: consumer bug")
        self.consumer = self.published.append
        del self.published[:]
        self.clock.advance(1)
        self.list_web()
        self.assertEqual(len(self.published), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_bad_change(self) -> None:
        """A change the client should never hand over (here no key) is a failure like any."""
        self.list_web()
        on_changes = self.client.watches[-1][1]
        on_changes([Change("put", None, False, Entry("x", 11), 11)], 11)  # type: ignore[arg-type]
        self.assertIs(self.watcher.state, WatchState.BACKING_OFF)
        self.assertEqual(len(self.failures()), 1)
        self.assert_recovers(2)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError, TypeError)), 1)

    def test_stray_cancellation(self) -> None:
        """A request cancelled by something other than stopService does not end the loop."""
        self.list_web()
        self.client.watches[-1][2].cancel()
        self.assert_backing_off("CancelledError")
        self.assert_recovers(2)
        self.assertEqual(len(self.flushLoggedErrors(CancelledError)), 1)

    def test_registry_error(self) -> None:
        """etcd out of reach: unreachable, last catalog kept, then resynced."""
        self.list_web()
        kept = self.watcher.catalog
        self.client.watches[-1][2].errback(RegistryError(ENDPOINT, "connection refused"))
        self.assertIs(self.watcher.state, WatchState.UNREACHABLE)
        self.assertTrue(self.watcher.alive)
        self.assertEqual(self.watcher.last_error, "connection refused")
        self.assertIs(self.watcher.catalog, kept)
        self.assertEqual(self.failures(), [])
        self.assert_recovers(2)

    def test_index_cleared(self) -> None:
        """History gone: list again at once, without backing off."""
        self.list_web()
        self.client.watches[-1][2].errback(IndexCleared(ENDPOINT, "compacted"))
        self.assertIs(self.watcher.state, WatchState.RESYNCING)
        self.assert_recovers(2, delay=0)

    def test_loop_bug_restarts(self) -> None:
        """If the loop itself dies (here its backoff policy raises), it is restarted."""
        policy: list[Any] = [ArithmeticError("policy bug")]

        def backoff(attempt: int) -> float:
            if policy:
                raise policy.pop()
            return 1.0

        self.watcher._backoff = backoff
        self.client.snapshots[-1].errback(RegistryError(ENDPOINT, "refused"))
        self.assertIs(self.watcher.state, WatchState.BACKING_OFF)
        self.assertTrue(self.watcher.alive)
        self.assertEqual(self.watcher.last_error, "ArithmeticError: policy bug")
        self.assert_recovers(2)
        self.assertEqual(len(self.flushLoggedErrors(ArithmeticError)), 1)
