"""How late the reactor runs a timer: the lag every connection on the host waits through.

ddiscover is one thread; any long reactor turn (a big render, a catalog rebuild) delays every
proxied byte by as long.  :class:`LoopLagProbe` asks the injected clock for a call every
``interval`` seconds and records how much later than asked it ran, in a histogram with
Prometheus's cumulative buckets and the largest lag seen; the stats page and ``/metrics``
(``ddiscover_process_loop_lag_seconds``) show them.
"""

from __future__ import annotations

import bisect

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

INTERVAL = 0.1
"""Seconds between probes: ten a second costs nothing and catches stalls of 100 ms."""

#: Upper bounds of the histogram's buckets, in seconds (``+Inf`` is implied).
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@attrs.define
class LagHistogram:
    """Lags observed: a count per bucket (not cumulative), their sum, and the largest."""

    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = attrs.field(
        default=attrs.Factory(lambda self: [0] * (len(self.buckets) + 1), takes_self=True)
    )
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def observe(self, lag: float) -> None:
        """Count one lag of ``lag`` seconds."""
        self.counts[bisect.bisect_left(self.buckets, lag)] += 1
        self.count += 1
        self.total += lag
        self.max = max(self.max, lag)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus's ``le`` buckets: each bound with the count at or under it."""
        bounds = [*(repr(b) for b in self.buckets), "+Inf"]
        running, out = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@attrs.frozen
class LagReading:
    """The probe at one instant: last and largest lag, count, sum, cumulative buckets."""

    last: float | None
    max: float
    count: int
    total: float
    buckets: tuple[tuple[str, int], ...]


class LoopLagProbe(Service):
    """Schedules itself every ``interval`` on ``clock`` and records how late each call ran.

    ``last`` is the most recent lag; ``histogram`` all of them since start.  Each call
    schedules the next before anything else, and recording cannot raise, so the probe
    cannot stop while the service runs.
    """

    def __init__(self, clock: IReactorTime, interval: float = INTERVAL) -> None:
        self._clock = clock
        self.interval = interval
        self.histogram = LagHistogram()
        self.last: float | None = None
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def reading(self) -> LagReading:
        """What the probe has seen so far, as a value."""
        histogram = self.histogram
        return LagReading(
            last=self.last,
            max=histogram.max,
            count=histogram.count,
            total=histogram.total,
            buckets=tuple(histogram.cumulative()),
        )

    def _schedule(self) -> None:
        due = self._clock.seconds() + self.interval
        self._call = self._clock.callLater(self.interval, self._fired, due)

    def _fired(self, due: float) -> None:
        self._schedule()
        lag = max(0.0, self._clock.seconds() - due)
        self.last = lag
        self.histogram.observe(lag)
