"""Tests for :mod:`ddiscover.health.schedule`: first checks soon, phases spread, never bunched.

The distribution tests run whole checkers on a ``task.Clock`` with a seeded random jitter
and connects that succeed at once, and count the checks in every 100 ms window.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.health.checker import HealthChecker
from ddiscover.health.schedule import CheckSchedule, Jitter
from tests.fake_endpoints import FakeEndpoints

STEP = 0.01


def big_catalog(count: int) -> Catalog:
    """One service per 10 backends, ``count`` backends at distinct addresses."""
    backends = [Backend(f"b{i}", Address("10.1.0.1", 10000 + i)) for i in range(count)]
    services: dict[str, Service] = {}
    for n in range(0, count, 10):
        name = f"s{n // 10}"
        services[name] = Service(name, 20000 + n // 10, frozenset(backends[n : n + 10]))
    return Catalog(services)


def draws(*values: float) -> Jitter:
    """A jitter that returns ``values`` in turn, whatever the limit."""
    them = iter(values)
    return lambda _limit: next(them)


class Run:
    """A started checker whose connects all succeed at once; records when each check ran."""

    def __init__(
        self, count: int, interval: float = 2.0, seed: int = 7, first_check_rate: float = 1000
    ) -> None:
        self.clock = Clock()
        self.endpoints = FakeEndpoints()
        draw = random.Random(seed)
        self.checker = HealthChecker(
            self.clock,
            self.endpoints,
            interval=interval,
            rise=1,
            fall=1,
            connect_timeout=1.0,
            jitter=lambda limit: draw.uniform(0, limit),
            first_check_rate=first_check_rate,
        )
        self.checker.startService()
        self.times: list[float] = []
        self._seen = 0
        self.catalog = big_catalog(count)
        self.checker.reconcile(self.catalog)

    def run_until(self, end: float) -> None:
        """Advance in 10 ms steps to ``end``, settling every check as it starts."""
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(STEP)
            fresh = self.endpoints.attempts[self._seen :]
            self._seen = len(self.endpoints.attempts)
            for attempt in fresh:
                self.times.append(self.clock.seconds())
                attempt.succeed()

    def all_up(self) -> bool:
        return all(self.checker.is_up(a) for a in self.catalog.addresses())

    def stop(self) -> None:
        self.checker.stopService()


class DelayTests(SynchronousTestCase):
    """The pure schedule."""

    def test_zero_jitter(self) -> None:
        """With no jitter: at once, then exactly every interval."""
        delays = CheckSchedule(2.0).delays(1, lambda limit: 0.0)
        self.assertEqual(list(itertools.islice(delays, 4)), [0.0, 2.0, 2.0, 2.0])

    def test_first_window(self) -> None:
        """A batch's first checks share ``min(interval, batch / rate)``."""
        schedule = CheckSchedule(2.0, first_check_rate=1000.0)
        self.assertEqual(
            [schedule.first_window(n) for n in (0, 1, 500, 3000)], [0.001, 0.001, 0.5, 2.0]
        )

    def test_second_check_moves_to_its_phase(self) -> None:
        """The second check lands at the drawn phase, at least half an interval later."""
        for phase, gap in [(1.5, 1.1), (0.6, 2.2), (0.0, 1.6)]:
            delays = CheckSchedule(2.0).delays(1000, draws(0.4, phase))
            self.assertAlmostEqual(list(itertools.islice(delays, 2))[1], gap)

    def test_intervals_jittered_up_to_spread(self) -> None:
        """Steady intervals are ``interval`` plus a draw of up to ``spread`` of it."""
        schedule = CheckSchedule(2.0, spread=0.05)
        self.assertAlmostEqual(schedule.next_interval(lambda limit: limit), 2.1)
        self.assertEqual(schedule.next_interval(lambda limit: 0.0), 2.0)

    def test_invalid(self) -> None:
        with self.assertRaises(ValueError):
            CheckSchedule(2.0, first_check_rate=0)


class DistributionTests(SynchronousTestCase):
    """Whole checkers on a clock: how checks fall in time."""

    def test_steady_checks_spread_over_the_interval(self) -> None:
        """500 backends every 2 s: no 100 ms window gets more than twice its share (25).

        Before, every first check fell within ``interval / 10`` and kept that phase, so about
        half of all checks landed in one 100 ms window.
        """
        run = Run(500)
        run.run_until(12.0)
        run.stop()
        windows = Counter(int(t * 10) for t in run.times if 4.0 <= t < 12.0)
        self.assertEqual(len(windows), 80)
        self.assertLess(max(windows.values()), 50)

    def test_cold_start_all_up_within_an_interval(self) -> None:
        """New backends at twice the first-check rate per interval: all UP within it, and the
        checks at about the rate (here 1,000 at 250/s; ``task.Clock`` is too slow for 3,000).
        """
        run = Run(1000, first_check_rate=250)
        self.assertTrue(run.checker.is_pending(Address("10.1.0.1", 10000)))
        run.run_until(2.0)
        self.assertTrue(run.all_up())
        per_step = Counter(int(t / STEP + 0.5) for t in run.times)
        self.assertLess(max(per_step.values()), 15)
        run.stop()

    def test_single_new_backend_checked_at_once(self) -> None:
        """One new backend is checked within a few milliseconds, not a tenth of the interval."""
        run = Run(1, interval=10.0)
        run.run_until(STEP)
        self.assertTrue(run.all_up())
        run.stop()
