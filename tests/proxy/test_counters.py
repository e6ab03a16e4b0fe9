"""Tests for :mod:`ddiscover.proxy.counters`: the session rate and the session counters."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.counters import Counters, SessionRate


class SessionRateTests(SynchronousTestCase):
    """Sessions per second over a sliding second, counted where sessions start."""

    def test_within_one_second(self) -> None:
        """Sessions in the current second all count."""
        rate = SessionRate()
        for now in (100.0, 100.2, 100.9):
            rate.count(now)
        self.assertEqual(rate.read(100.95), 3)
        self.assertEqual(rate.max, 3)

    def test_previous_second_fades_out(self) -> None:
        """The last second counts for the part of it still inside the window."""
        rate = SessionRate()
        for _ in range(10):
            rate.count(100.5)
        self.assertEqual(rate.read(101.0), 10)
        self.assertEqual(rate.read(101.25), 7)
        self.assertEqual(rate.read(101.75), 2)
        rate.count(101.75)
        self.assertEqual(rate.read(101.75), 1 + 2)
        self.assertEqual(rate.read(102.5), 0)
        self.assertEqual(rate.read(103.0), 0)
        self.assertEqual(rate.max, 10)

    def test_gap_forgets_old_seconds(self) -> None:
        """After a quiet second or more, earlier seconds no longer count."""
        rate = SessionRate()
        for _ in range(5):
            rate.count(100.0)
        rate.count(102.1)
        self.assertEqual(rate.read(102.1), 1)
        self.assertEqual(rate.max, 5)


class CountersTests(SynchronousTestCase):
    """Opening and closing sessions."""

    def test_session_opened_and_closed(self) -> None:
        """Current, maximum and total sessions, the rate, and when the last one started."""
        counters = Counters()
        counters.session_opened(50.0)
        counters.session_opened(50.5)
        counters.session_closed()
        self.assertEqual((counters.scur, counters.smax, counters.stot), (1, 2, 2))
        self.assertEqual(counters.last_session, 50.5)
        self.assertEqual((counters.rate.read(50.5), counters.rate.max), (2, 2))
