"""Tests for :mod:`ddiscover.health.checker` on a ``task.Clock`` with hand-fired connects."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.health.checker import HealthChecker
from ddiscover.health.result import CheckResult, CheckStatus
from ddiscover.health.state import HealthRecord
from tests.fake_endpoints import Attempt, FakeEndpoints

WEB1 = Address("10.0.0.1", 8080)
WEB2 = Address("10.0.0.2", 8080)
INTERVAL = 2.0
REFUSED = CheckResult(CheckStatus.L4CON, "Connection refused")
EMFILE = CheckResult(CheckStatus.SOCKERR, "Too many open files")


def catalog(**services: Sequence[tuple[str, Address]]) -> Catalog:
    """A catalog of the named services, each a list of ``(backend id, address)``."""
    ports = itertools.count(9000)
    # Any: mypy's attrs plugin cannot type Catalog's ``converter=dict`` argument.
    by_name: Any = {
        name: Service(name, next(ports), frozenset(Backend(i, a) for i, a in backends))
        for name, backends in services.items()
    }
    return Catalog(by_name)


def broken_subscriber(address: Address, old: HealthRecord, new: HealthRecord) -> None:
    """A subscriber with a bug."""
    raise ZeroDivisionError(address)


class BreakableClock(Clock):
    """A clock whose next ``breaks`` reads raise, to stand for a bug in the counting path."""

    breaks = 0

    def seconds(self) -> float:
        if self.breaks:
            self.breaks -= 1
            raise ZeroDivisionError("broken clock")
        return super().seconds()


class CheckerTestCase(SynchronousTestCase):
    """Builds a started checker on a clock with fake endpoints and a recorded zero jitter."""

    def setUp(self) -> None:
        self.clock = BreakableClock()
        self.endpoints = FakeEndpoints()
        self.jitter_limits: list[float] = []
        self.delay = 0.0

    def jitter(self, limit: float) -> float:
        self.jitter_limits.append(limit)
        return self.delay

    def make(self, **options: Any) -> HealthChecker:
        """A running checker (interval 2, rise 3, fall 2 unless overridden), stopped after."""
        settings: dict[str, Any] = {
            "interval": INTERVAL,
            "rise": 3,
            "fall": 2,
            "connect_timeout": 5.0,
            "jitter": self.jitter,
        }
        settings.update(options)
        checker = HealthChecker(self.clock, self.endpoints, **settings)
        checker.startService()
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))
        self.addCleanup(self.stop, checker)
        return checker

    def stop(self, checker: HealthChecker) -> None:
        """Stop ``checker`` if the test has not."""
        if checker.running:
            checker.stopService()

    def pending(self, address: Address) -> Attempt:
        """The one unsettled connect to ``address``."""
        [attempt] = [a for a in self.endpoints.pending() if a.address == address]
        return attempt

    def settle(self, address: Address, outcome: str) -> None:
        """Settle the pending check of ``address``: ``+`` ok, ``-`` refused, ``t`` timeout,
        ``e`` EMFILE."""
        attempt = self.pending(address)
        {
            "+": attempt.succeed,
            "-": attempt.refuse,
            "t": attempt.time_out,
            "e": attempt.emfile,
        }[outcome]()

    def statuses(self, checker: HealthChecker, address: Address, outcomes: str) -> list[str]:
        """Settle one check per outcome, an interval apart; the status after each."""
        seen = []
        for outcome in outcomes:
            self.settle(address, outcome)
            self.clock.advance(INTERVAL)
            record = checker.record(address)
            assert record is not None
            seen.append(record.status())
        return seen

    def start(self, checker: HealthChecker, cat: Catalog) -> None:
        """Reconcile ``cat`` and let the (zero-jitter) first checks begin."""
        checker.reconcile(cat)
        self.clock.advance(0)


@contextmanager
def health_logs() -> Iterator[list[tuple[str, str]]]:
    """Capture the checker's log events as ``(level, formatted text)``."""
    lines: list[tuple[str, str]] = []
    with capturedLogs() as events:
        yield lines
    lines.extend(_ours(events))


def _ours(events: Sequence[LogEvent]) -> Iterator[tuple[str, str]]:
    for event in events:
        if event.get("log_namespace", "").startswith("ddiscover.health"):
            yield event["log_level"].name, formatEvent(event)


class ScheduleTests(CheckerTestCase):
    """When checks run, for how long, and that they never overlap."""

    def test_first_check_after_jitter(self) -> None:
        """One new backend is checked ``jitter(1 / first_check_rate)`` after discovery."""
        self.delay = 0.15
        checker = self.make()
        checker.reconcile(catalog(web=[("abc", WEB1)]))
        self.clock.advance(0.149)
        self.assertEqual(self.endpoints.attempts, [])
        self.clock.advance(0.001)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.assertEqual(self.jitter_limits[0], 0.001)

    def test_every_interval(self) -> None:
        """After the first check, one runs every ``interval`` seconds."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        self.clock.advance(INTERVAL - 0.001)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(self.endpoints.attempts), 2)

    def test_timeout_bound(self) -> None:
        """The endpoint gets ``min(connect_timeout, interval)`` as its timeout."""
        for connect_timeout, expected in [(5.0, INTERVAL), (0.5, 0.5)]:
            checker = self.make(connect_timeout=connect_timeout)
            self.start(checker, catalog(web=[("abc", WEB1)]))
            self.assertEqual(self.endpoints.attempts[-1].timeout, expected)
            checker.stopService()

    def test_no_overlap(self) -> None:
        """A check still connecting delays the next one instead of overlapping it."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.clock.advance(INTERVAL * 10 + 1)
        self.assertEqual(len(self.endpoints.attempts), 1)
        self.settle(WEB1, "t")
        self.clock.advance(INTERVAL)
        self.assertEqual(len(self.endpoints.attempts), 2)

    def test_check_connection_closed(self) -> None:
        """A successful check closes its connection at once, without writing."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        transport = self.pending(WEB1).succeed()
        self.assertEqual((transport.disconnecting, transport.value()), (True, b""))

    def test_duration(self) -> None:
        """A check's duration is measured on the injected clock."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.clock.advance(0.25)
        self.settle(WEB1, "-")
        record = checker.record(WEB1)
        assert record is not None and record.last is not None
        self.assertEqual(record.last.duration, 0.25)

    def test_invalid_timing(self) -> None:
        """A non-positive interval or connect timeout is refused at construction."""
        with self.assertRaises(ValueError):
            HealthChecker(
                self.clock, self.endpoints, interval=0, rise=1, fall=1, connect_timeout=1
            )
        with self.assertRaises(ValueError):
            HealthChecker(
                self.clock, self.endpoints, interval=1, rise=1, fall=1, connect_timeout=0
            )


class RiseFallTests(CheckerTestCase):
    """Check results drive the rise/fall record of each address."""

    def test_new_backend_down_until_first_success(self) -> None:
        """A discovered address is not routable until its first check passes."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        record = checker.record(WEB1)
        assert record is not None
        self.assertEqual((checker.is_up(WEB1), record.status()), (False, "INI"))
        self.settle(WEB1, "+")
        self.assertTrue(checker.is_up(WEB1))

    def test_rise_and_fall(self) -> None:
        """With rise 3 and fall 2: UP, UP 1/2, DOWN, then three successes back to UP."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.assertEqual(
            self.statuses(checker, WEB1, "+--+++"),
            ["UP", "UP 1/2", "DOWN", "DOWN 1/3", "DOWN 2/3", "UP"],
        )

    def test_addresses_are_independent(self) -> None:
        """Each address has its own loop and record."""
        checker = self.make(rise=1, fall=1)
        self.start(checker, catalog(web=[("abc", WEB1), ("def", WEB2)]))
        self.settle(WEB1, "+")
        self.settle(WEB2, "-")
        self.assertEqual((checker.is_up(WEB1), checker.is_up(WEB2)), (True, False))

    def test_unknown_address(self) -> None:
        """An address not in the catalog is not up and has no record."""
        checker = self.make()
        self.assertEqual((checker.is_up(WEB1), checker.record(WEB1)), (False, None))


class ReportTests(CheckerTestCase):
    """Failed proxied connects reported by the proxy count like failed checks."""

    def test_failures_count(self) -> None:
        """``fall`` reported failures take an UP address DOWN between checks."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        checker.report(WEB1, REFUSED)
        checker.report(WEB1, CheckResult(CheckStatus.L4TOUT))
        self.assertFalse(checker.is_up(WEB1))
        record = checker.record(WEB1)
        assert record is not None
        self.assertEqual((record.failures, record.downs), (2, 1))

    def test_successes_ignored(self) -> None:
        """A reported success does not raise health; only checks do."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "-")
        before = checker.record(WEB1)
        checker.report(WEB1, CheckResult(CheckStatus.L4OK))
        self.assertIs(checker.record(WEB1), before)

    def test_unknown_address_ignored(self) -> None:
        """A report about an address not in the catalog changes nothing."""
        checker = self.make()
        checker.report(WEB1, REFUSED)
        self.assertIsNone(checker.record(WEB1))

    def test_local_error_not_counted(self) -> None:
        """A reported ``SOCKERR`` leaves the record as it was."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        before = checker.record(WEB1)
        with health_logs():
            checker.report(WEB1, EMFILE)
        self.assertIs(checker.record(WEB1), before)


class LocalErrorTests(CheckerTestCase):
    """Our own EMFILE is not the backend's fault."""

    def test_not_counted_and_logged_once(self) -> None:
        """``SOCKERR`` checks leave the record alone and warn once until a connect works."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        before = checker.record(WEB1)
        with health_logs() as lines:
            self.settle(WEB1, "e")
            self.clock.advance(INTERVAL)
            self.settle(WEB1, "e")
            self.clock.advance(INTERVAL)
            self.assertIs(checker.record(WEB1), before)
            self.settle(WEB1, "+")
        self.assertEqual(
            lines,
            [
                (
                    "warn",
                    'Connect to 10.0.0.1:8080 failed on our side, info: "Too many open files"; '
                    "local socket errors are not counted against backends and are not logged "
                    "again until a connect gets through",
                ),
                ("info", "Connects get through again; local socket errors are over"),
                (
                    "info",
                    "Server web/abc is UP, reason: Layer4 check passed, check duration: 0ms. "
                    "1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
                ),
            ],
        )


class RetireTests(CheckerTestCase):
    """Removed addresses stop being checked; their records wait a while for them to return."""

    def test_removal_stops_checks(self) -> None:
        """Removing an address cancels its connect under way, uncounted, and stops its loop."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        before = checker.record(WEB1)
        attempt = self.pending(WEB1)
        checker.reconcile(Catalog())
        self.assertTrue(attempt.cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((checker.is_up(WEB1), checker.record(WEB1)), (False, None))
        checker.reconcile(catalog(web=[("abc", WEB1)]))
        self.assertEqual(checker.record(WEB1), before)

    def test_removal_before_first_check(self) -> None:
        """Removing an address before its first check cancels that check."""
        self.delay = 0.1
        checker = self.make()
        checker.reconcile(catalog(web=[("abc", WEB1)]))
        checker.reconcile(Catalog())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1)
        self.assertEqual(self.endpoints.attempts, [])

    def test_restored_by_address(self) -> None:
        """An address re-registered within ``retire_after`` keeps its counters, not its verdict.

        It was UP, but the new registration may not listen yet: it is pending and not routed
        until its first check, which one success makes UP again.
        """
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.statuses(checker, WEB1, "+-+")
        checker.reconcile(Catalog())
        self.clock.advance(299)
        self.start(checker, catalog(web=[("xyz", WEB1)]))
        record = checker.record(WEB1)
        assert record is not None
        self.assertEqual(
            (checker.is_up(WEB1), checker.is_pending(WEB1), record.status()),
            (False, True, "INI"),
        )
        self.assertEqual((record.failures, record.changed_at), (1, 305.0))
        self.settle(WEB1, "+")
        record = checker.record(WEB1)
        assert record is not None
        self.assertEqual((checker.is_up(WEB1), record.status()), (True, "UP"))
        self.assertEqual((record.failures, record.total_downtime(305.0)), (1, 0.0))

    def test_retired_records_expire(self) -> None:
        """After ``retire_after`` seconds a returning address starts over."""
        checker = self.make(retire_after=60.0)
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        checker.reconcile(Catalog())
        self.clock.advance(60)
        checker.reconcile(catalog(web=[("abc", WEB1)]))
        record = checker.record(WEB1)
        assert record is not None
        self.assertEqual((record.status(), record.changed_at), ("INI", 60.0))


class SubscribeTests(CheckerTestCase):
    """Subscribers hear of every UP<->DOWN change, with the old and new records."""

    def setUp(self) -> None:
        super().setUp()
        self.changes: list[tuple[Address, str, str]] = []

    def record_change(self, address: Address, old: HealthRecord, new: HealthRecord) -> None:
        self.changes.append((address, old.status(), new.status()))

    def test_changes(self) -> None:
        """Only the changes between UP and DOWN are reported."""
        checker = self.make()
        checker.subscribe(self.record_change)
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.statuses(checker, WEB1, "+--+++")
        self.assertEqual(
            self.changes,
            [(WEB1, "INI", "UP"), (WEB1, "UP 1/2", "DOWN"), (WEB1, "DOWN 2/3", "UP")],
        )

    def test_first_failure_is_told(self) -> None:
        """A first result is told even when it is no UP<->DOWN change, as the proxy holding
        clients for it needs; later failures that change nothing are not."""
        checker = self.make()
        checker.subscribe(self.record_change)
        self.start(checker, catalog(web=[("abc", WEB1)]))
        with health_logs():
            self.statuses(checker, WEB1, "--")
        self.assertEqual(self.changes, [(WEB1, "INI", "DOWN")])

    def test_pending_until_first_result(self) -> None:
        """``is_pending`` holds from discovery to the first counted result, of either kind."""
        checker = self.make()
        self.assertFalse(checker.is_pending(WEB1))
        self.start(checker, catalog(web=[("abc", WEB1), ("def", WEB2)]))
        self.assertEqual((checker.is_pending(WEB1), checker.is_pending(WEB2)), (True, True))
        with health_logs():
            self.settle(WEB1, "-")
            self.settle(WEB2, "e")
        self.assertEqual((checker.is_pending(WEB1), checker.is_pending(WEB2)), (False, True))

    def test_failing_subscriber_contained(self) -> None:
        """A subscriber that raises is logged; the others and the checks carry on."""
        checker = self.make()
        checker.subscribe(broken_subscriber)
        checker.subscribe(self.record_change)
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.changes, [(WEB1, "INI", "UP")])
        self.clock.advance(INTERVAL)
        self.assertEqual(len(self.endpoints.pending()), 1)


class LogTests(CheckerTestCase):
    """Changes are logged in haproxy's words, once per service and backend id."""

    def test_up_and_down(self) -> None:
        """UP at info and DOWN (refused) at warn, counting the service's UP servers."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1), ("def", WEB2)]))
        with health_logs() as lines:
            self.settle(WEB1, "+")
            self.settle(WEB2, "+")
            self.clock.advance(INTERVAL)
            self.settle(WEB2, "+")
            self.statuses(checker, WEB1, "--")
        self.assertEqual(
            lines,
            [
                (
                    "info",
                    "Server web/abc is UP, reason: Layer4 check passed, check duration: 0ms. "
                    "1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
                ),
                (
                    "info",
                    "Server web/def is UP, reason: Layer4 check passed, check duration: 0ms. "
                    "2 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.",
                ),
                (
                    "warn",
                    "Server web/abc is DOWN, reason: Layer4 connection problem, "
                    'info: "Connection refused", check duration: 0ms. '
                    "1 active and 0 backup servers left. "
                    "0 sessions active, 0 requeued, 0 remaining in queue.",
                ),
            ],
        )

    def test_timeout_and_no_server(self) -> None:
        """A timeout has no info part; losing the last server says so."""
        checker = self.make(rise=1, fall=1)
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        self.clock.advance(INTERVAL)
        with health_logs() as lines:
            self.clock.advance(INTERVAL)
            self.settle(WEB1, "t")
        self.assertEqual(
            lines,
            [
                (
                    "warn",
                    "Server web/abc is DOWN, reason: Layer4 timeout, check duration: 2000ms. "
                    "0 active and 0 backup servers left. "
                    "0 sessions active, 0 requeued, 0 remaining in queue.",
                ),
                ("error", "service web has no server available!"),
            ],
        )

    def test_first_failure_logged(self) -> None:
        """A new backend failing its first check is logged DOWN."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        with health_logs() as lines:
            self.settle(WEB1, "-")
            self.clock.advance(INTERVAL)
            self.settle(WEB1, "-")
        self.assertEqual(
            lines,
            [
                (
                    "warn",
                    "Server web/abc is DOWN, reason: Layer4 connection problem, "
                    'info: "Connection refused", check duration: 0ms. '
                    "0 active and 0 backup servers left. "
                    "0 sessions active, 0 requeued, 0 remaining in queue.",
                )
            ],
        )

    def test_one_line_per_service_and_id(self) -> None:
        """An address shared by services or ids is logged under each name."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1), ("abd", WEB1)], api=[("xyz", WEB1)]))
        with health_logs() as lines:
            self.settle(WEB1, "+")
        self.assertEqual(
            [text.split(" is ")[0] for _, text in lines],
            ["Server api/xyz", "Server web/abc", "Server web/abd"],
        )
        self.assertEqual(len(self.endpoints.attempts), 1)

    def test_structured_fields(self) -> None:
        """Log events carry their values as fields, not only in the text."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        with capturedLogs() as events:
            self.settle(WEB1, "+")
        [event] = [e for e in events if e.get("service") == "web"]
        self.assertEqual(
            {k: event[k] for k in ("service", "server", "address", "status", "active")},
            {"service": "web", "server": "abc", "address": WEB1, "status": "L4OK", "active": 1},
        )


class LifecycleTests(CheckerTestCase):
    """Starting and stopping the service."""

    def test_stop_leaves_nothing_behind(self) -> None:
        """Stopping cancels first checks and connects under way, and keeps the records."""
        self.delay = 0.1
        checker = self.make()
        checker.reconcile(catalog(web=[("abc", WEB1)]))
        self.clock.advance(0.1)
        checker.reconcile(catalog(web=[("abc", WEB1), ("def", WEB2)]))
        attempt = self.pending(WEB1)
        before = checker.record(WEB1), checker.record(WEB2)
        checker.stopService()
        self.assertTrue(attempt.cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((checker.record(WEB1), checker.record(WEB2)), before)

    def test_restart_resumes(self) -> None:
        """A restarted checker checks the addresses it knew, keeping their records."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        checker.stopService()
        checker.startService()
        self.clock.advance(0)
        self.assertTrue(checker.is_up(WEB1))
        self.assertEqual(len(self.endpoints.pending()), 1)

    def test_reconcile_before_start(self) -> None:
        """Before ``startService`` a catalog is remembered but nothing is scheduled."""
        checker = HealthChecker(
            self.clock, self.endpoints, interval=2, rise=1, fall=1, connect_timeout=1
        )
        checker.reconcile(catalog(web=[("abc", WEB1)]))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        checker.startService()
        self.clock.advance(0.2)
        self.assertEqual(len(self.endpoints.attempts), 1)
        checker.stopService()

    def test_bug_backs_off_and_resumes(self) -> None:
        """A bug while counting a check is logged once with its traceback; the address is
        not routed while its loop backs off, then its checks resume.  Others carry on."""
        checker = self.make(rise=1, fall=1)
        self.start(checker, catalog(web=[("abc", WEB1), ("def", WEB2)]))
        self.settle(WEB2, "+")
        self.settle(WEB1, "+")
        self.clock.advance(INTERVAL)
        self.clock.breaks = 1
        self.settle(WEB1, "+")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual((checker.is_up(WEB1), checker.is_up(WEB2)), (False, True))
        self.clock.advance(0.999)
        self.assertEqual([a.address for a in self.endpoints.pending()], [WEB2])
        self.clock.advance(0.001)
        self.assertEqual(len(self.endpoints.pending()), 2)
        self.settle(WEB1, "+")
        self.assertTrue(checker.is_up(WEB1))

    def test_backoff_grows(self) -> None:
        """Bugs in a row back off 1, 2, 4 s, each logged once; a counted result resets it."""
        checker = self.make()
        self.start(checker, catalog(web=[("abc", WEB1)]))
        retries = []
        for _ in range(3):
            self.clock.breaks = 1
            self.settle(WEB1, "-")
            [retry] = self.clock.getDelayedCalls()
            retries.append(retry.getTime() - self.clock.seconds())
            self.clock.advance(retries[-1])
        self.assertEqual(retries, [1.0, 2.0, 4.0])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)
        self.settle(WEB1, "-")
        self.clock.advance(INTERVAL)
        self.clock.breaks = 1
        self.settle(WEB1, "-")
        [retry] = self.clock.getDelayedCalls()
        self.assertEqual(retry.getTime() - self.clock.seconds(), 1.0)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_failing_connector_is_a_failed_check(self) -> None:
        """An exception of any kind from the endpoint factory or the connect is unhealthy."""

        def broken_factory(address: Address, timeout: float) -> Any:
            raise ValueError(f"bad host {address.host}")

        checker = HealthChecker(
            self.clock, broken_factory, interval=2, rise=1, fall=1, connect_timeout=1
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        with health_logs() as lines:
            checker.reconcile(catalog(web=[("abc", WEB1)]))
            self.clock.advance(1)
        record = checker.record(WEB1)
        assert record is not None and record.last is not None
        self.assertEqual(
            (record.status(), record.last.status, record.last.info),
            ("DOWN", CheckStatus.L4CON, "bad host 10.0.0.1"),
        )
        self.assertEqual(len(lines), 1)
        self.clock.advance(INTERVAL)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_dns_failure_is_a_failed_check(self) -> None:
        """A hostname that does not resolve (``DNSLookupError``) counts as a failed check."""
        checker = self.make(rise=1, fall=1)
        self.start(checker, catalog(web=[("abc", WEB1)]))
        self.settle(WEB1, "+")
        self.clock.advance(INTERVAL)
        self.pending(WEB1).not_resolved()
        self.assertFalse(checker.is_up(WEB1))
        self.clock.advance(INTERVAL)
        self.assertEqual(len(self.endpoints.pending()), 1)
