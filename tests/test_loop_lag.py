"""Tests for :mod:`ddiscover.loop_lag`: how late the reactor runs a timer, on a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.loop_lag import LagHistogram, LoopLagProbe


class LoopLagProbeTests(SynchronousTestCase):
    """The probe on ``task.Clock``: a late advance is a lag."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.probe = LoopLagProbe(self.clock, interval=0.1)
        self.probe.startService()

    def test_on_time(self) -> None:
        """Calls run when due record no lag, and the probe keeps going."""
        for _ in range(5):
            self.clock.advance(0.1)
        self.assertEqual(self.probe.histogram.count, 5)
        self.assertEqual(self.probe.histogram.max, 0.0)
        self.assertEqual(self.probe.last, 0.0)

    def test_stall(self) -> None:
        """A reactor stuck for 0.35 s runs the call 0.25 s late: that is the lag recorded."""
        self.clock.advance(0.1)
        self.clock.advance(0.35)
        self.assertAlmostEqual(self.probe.last or 0, 0.25)
        self.assertAlmostEqual(self.probe.histogram.max, 0.25)
        self.assertEqual(self.probe.histogram.count, 2)
        self.assertEqual(dict(self.probe.histogram.cumulative())["0.25"], 2)
        self.assertEqual(dict(self.probe.histogram.cumulative())["0.1"], 1)

    def test_stop(self) -> None:
        """Stopping leaves no call behind."""
        self.probe.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LagHistogramTests(SynchronousTestCase):
    """Buckets as Prometheus counts them: ``le`` is inclusive and cumulative."""

    def test_buckets(self) -> None:
        """A lag equal to a bound counts in that bound; everything counts in ``+Inf``."""
        histogram = LagHistogram(buckets=(0.01, 0.1))
        for lag in (0.0, 0.01, 0.05, 3.0):
            histogram.observe(lag)
        self.assertEqual(histogram.cumulative(), [("0.01", 2), ("0.1", 3), ("+Inf", 4)])
        self.assertAlmostEqual(histogram.total, 3.06)
        self.assertEqual((histogram.count, histogram.max), (4, 3.0))
