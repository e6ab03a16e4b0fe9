"""When the checks of one address run: a pure description of the delays between them.

haproxy spreads its first checks evenly over ``inter`` and can jitter every interval
(``spread-checks``), so thousands of servers do not all connect in the same instant.  ddiscover
starts a backend DOWN, so its first check must also come soon; the two pull apart, and
:meth:`CheckSchedule.delays` settles them in three steps:

1. the first check lands uniformly within ``min(interval, batch / first_check_rate)`` of
   discovery, ``batch`` being how many addresses start together: one new backend is checked
   at once, a cold start of 3,000 is spread over the interval rather than a burst;
2. the second check moves the address to a phase drawn uniformly over the whole interval (and
   at least half an interval after the first), so phases are uniform however the first checks
   were packed;
3. every later interval is lengthened by up to ``spread`` of itself, so phases that a stall of
   the reactor bunched together drift apart again (a uniform phase stays uniform under it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

Jitter = Callable[[float], float]
"""A random delay within ``[0, limit]``; tests pass one that returns what they want."""


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} {value} must be positive")


@attrs.frozen
class CheckSchedule:
    """The timing policy of every check loop of one checker."""

    interval: float = attrs.field(validator=_positive)
    first_check_rate: float = attrs.field(default=1000.0, validator=_positive)
    spread: float = 0.05

    def first_window(self, batch: int) -> float:
        """The span over which the first checks of ``batch`` addresses starting together fall."""
        return min(self.interval, max(batch, 1) / self.first_check_rate)

    def delays(self, batch: int, jitter: Jitter) -> Iterator[float]:
        """The delay to the first check, then from the start of each check to the next."""
        first = jitter(self.first_window(batch))
        yield first
        gap = jitter(self.interval) - first
        while gap < self.interval / 2:
            gap += self.interval
        yield gap
        while True:
            yield self.next_interval(jitter)

    def next_interval(self, jitter: Jitter) -> float:
        """One steady-state interval: ``interval`` plus up to ``spread`` of it."""
        return self.interval + jitter(self.spread * self.interval)
