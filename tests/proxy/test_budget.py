"""Tests for :mod:`ddiscover.proxy.budget`: the split of the open-files limit."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.budget import UNLIMITED, FdBudget, fd_budget, fit_maxconn


class FdBudgetTests(SynchronousTestCase):
    """Each share of a limit, and what never goes to zero."""

    def test_table(self) -> None:
        """Typical limits split into listeners, checks and two descriptors per connection."""
        cases = {
            1024: FdBudget(limit=1024, listeners=122, per_service=30, checks=122, maxconn=366),
            65536: FdBudget(65536, 8186, 2046, 8186, 24558),
            # Too small for anything but one connection and one listener.
            10: FdBudget(10, 1, 1, 0, 1),
        }
        for limit, expected in cases.items():
            self.assertEqual(fd_budget(limit), expected, limit)

    def test_fits_the_limit(self) -> None:
        """Whatever the limit, the shares add up to no more than it (above the reserve)."""
        for limit in (64, 100, 1024, 4096, 20000, 1 << 20):
            budget = fd_budget(limit)
            used = 16 + 32 + budget.listeners + budget.checks + 2 * budget.maxconn
            self.assertLessEqual(used, limit, limit)

    def test_unlimited(self) -> None:
        """RLIM_INFINITY (-1) and absurd limits count as Linux's default nr_open."""
        self.assertEqual(fd_budget(-1), fd_budget(UNLIMITED))
        self.assertEqual(fd_budget(1 << 62).limit, UNLIMITED)

    def test_fit_maxconn(self) -> None:
        """0 derives; a value that fits is kept silently; one that does not is kept, warned."""
        budget = fd_budget(1024)
        self.assertEqual(fit_maxconn(0, budget), (366, None))
        self.assertEqual(fit_maxconn(366, budget), (366, None))
        value, problem = fit_maxconn(1000, budget)
        self.assertEqual(value, 1000)
        self.assertEqual(
            problem,
            "--maxconn 1000 needs about 2292 file descriptors but the open-files limit is "
            "1024: beyond about 366 connections, accepts and connects will fail; raise the "
            "limit (ulimit -n) or use --maxconn 0 to derive it",
        )
