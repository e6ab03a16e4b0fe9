"""The scale scenario's arithmetic: percentiles, histogram quantiles and the report's table."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bench.scenarios.scale_loops import histogram_quantiles, percentiles
from bench.scenarios.scale_report import report, targets

LAG = "ddiscover_process_loop_lag_seconds"


def _histogram(counts: dict[str, int]) -> list[str]:
    return [f'{LAG}_bucket{{le="{le}"}} {n}' for le, n in counts.items()] + [f"{LAG}_count 0"]


class PercentilesTests(SynchronousTestCase):
    def test_nearest_rank(self) -> None:
        """p50 and p99 are nearest-rank values of the sample, max its largest."""
        result = percentiles([float(v) for v in range(1, 101)])
        self.assertEqual(result, {"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0})

    def test_one_outlier_is_the_max_not_the_p99(self) -> None:
        """One stall in 1,000 samples shows in the max and leaves the p99 alone."""
        result = percentiles([1.0] * 999 + [80.0])
        self.assertEqual((result["p99"], result["max"]), (1.0, 80.0))

    def test_empty(self) -> None:
        """No sample gives None, not an error."""
        self.assertEqual(percentiles([])["p99"], None)


class HistogramQuantilesTests(SynchronousTestCase):
    def test_between_two_scrapes(self) -> None:
        """Only the samples between the first and the last scrape count."""
        before = _histogram({"0.001": 10, "0.01": 10, "0.1": 10, "+Inf": 10})
        after = _histogram({"0.001": 108, "0.01": 109, "0.1": 110, "+Inf": 110})
        result = histogram_quantiles(before, after)
        self.assertEqual(result["samples"], 100)
        self.assertEqual(result["p50_le_s"], 0.001)
        self.assertEqual(result["p99_le_s"], 0.01)
        self.assertEqual(result["max_gt_s"], 0.01)

    def test_no_new_sample(self) -> None:
        """A histogram that did not move reports no samples."""
        lines = _histogram({"0.001": 5, "+Inf": 5})
        self.assertEqual(histogram_quantiles(lines, lines), {"samples": 0})


RESULT = {
    "args": {"services": 1000, "backends": 5},
    "ddiscover": {
        "ready_s": 12.0,
        "rest": {"cpu_idle": 0.25, "lag": {"rtt_ms": {"p50": 1.0, "p99": 8.0, "max": 40.0}}},
        "churn": {"lag": {"rtt_ms": {"p50": 2.0, "p99": 30.0, "max": 90.0}}},
    },
    "haproxy": {"ready_s": 6.0, "rest": {"cpu_idle": 0.05}},
}


class ReportTests(SynchronousTestCase):
    def test_ratio_to_haproxy(self) -> None:
        """The CPU row shows both figures in % of a core and their ratio."""
        line = next(ln for ln in report(RESULT).splitlines() if "checks only" in ln)
        self.assertEqual(line, "| CPU, checks only, % of a core | 25.0 | - | 5.0 | 5.00x |")

    def test_lag_targets(self) -> None:
        """Rest meets p99 < 10 ms and max < 50 ms; churn does not."""
        self.assertEqual(
            targets(RESULT),
            [
                "ddiscover rest: lag p99 8.00 ms (< 10), max 40.00 ms (< 50): met",
                "ddiscover churn: lag p99 30.00 ms (< 10), max 90.00 ms (< 50): NOT met",
            ],
        )
