"""Tests for :mod:`ddiscover.health.state`: haproxy's rise/fall counter as a pure function."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.health.result import CheckResult, CheckStatus
from ddiscover.health.state import HealthRecord, discovered, next_record, resumed

OK = CheckResult(CheckStatus.L4OK)
REFUSED = CheckResult(CheckStatus.L4CON, "Connection refused")
TIMEOUT = CheckResult(CheckStatus.L4TOUT, duration=2.0)
EMFILE = CheckResult(CheckStatus.SOCKERR, "Too many open files")
OUTCOMES = {"+": OK, "-": REFUSED}


def fully_up(rise: int, fall: int, now: float = 0.0) -> HealthRecord:
    """A backend that has passed its first check at ``now``."""
    return next_record(discovered(rise, fall, now), OK, now)


def fully_down(rise: int, fall: int, now: float = 0.0) -> HealthRecord:
    """A backend that has failed its first check at ``now``."""
    return next_record(discovered(rise, fall, now), REFUSED, now)


def statuses(record: HealthRecord, outcomes: str) -> list[str]:
    """The status after each outcome (``+`` success, ``-`` failure), one second apart."""
    seen = []
    for second, outcome in enumerate(outcomes, start=1):
        record = next_record(record, OUTCOMES[outcome], float(second))
        seen.append(record.status())
    return seen


class DiscoveredTests(SynchronousTestCase):
    """A newly discovered backend starts DOWN, one success away from UP."""

    def test_initial(self) -> None:
        """It starts at health ``rise - 1``, unchecked, DOWN, showing ``INI``."""
        record = discovered(3, 2, 10.0)
        self.assertEqual(
            (record.health, record.checked, record.is_up, record.status()),
            (2, False, False, "INI"),
        )
        self.assertEqual((record.changed_at, record.failures, record.downs), (10.0, 0, 0))
        self.assertIsNone(record.last)

    def test_first_success_is_fully_up(self) -> None:
        """One success makes it fully UP, whatever ``rise`` is."""
        for rise, fall in [(1, 1), (2, 3), (3, 2), (5, 5)]:
            record = fully_up(rise, fall)
            self.assertEqual((record.health, record.status()), (rise + fall - 1, "UP"))

    def test_first_failure_is_fully_down(self) -> None:
        """One failure makes it fully DOWN without counting as an UP->DOWN transition."""
        record = fully_down(3, 2)
        self.assertEqual((record.health, record.status()), (0, "DOWN"))
        self.assertEqual((record.failures, record.downs), (1, 0))

    def test_rise_one_starts_at_zero(self) -> None:
        """With ``rise`` 1 it starts at 0, so a first failure is not counted, as in haproxy."""
        record = next_record(discovered(1, 2, 0.0), REFUSED, 1.0)
        self.assertEqual((record.health, record.failures, record.status()), (0, 0, "DOWN"))

    def test_validation(self) -> None:
        """``rise`` and ``fall`` are at least 1, and health stays within the counter."""
        with self.assertRaises(ValueError):
            discovered(0, 2, 0.0)
        with self.assertRaises(ValueError):
            discovered(2, 0, 0.0)
        with self.assertRaises(ValueError):
            attrs.evolve(discovered(3, 2, 0.0), health=5)


class TransitionTests(SynchronousTestCase):
    """Timelines of statuses, table-driven, including the ones verified on haproxy 2.6."""

    def test_timelines(self) -> None:
        """Each start state and outcome sequence gives haproxy's statuses."""
        table = [
            # verified on haproxy 2.6 with rise 3 fall 2
            ("fall from UP", fully_up(3, 2), "--", ["UP 1/2", "DOWN"]),
            ("rise from DOWN", fully_down(3, 2), "+++", ["DOWN 1/3", "DOWN 2/3", "UP"]),
            # a success while going down restores full health at once
            ("recover", fully_up(3, 2), "-+-", ["UP 1/2", "UP", "UP 1/2"]),
            # a failure while rising starts the climb over
            (
                "relapse",
                fully_down(3, 2),
                "++-++",
                ["DOWN 1/3", "DOWN 2/3", "DOWN", "DOWN 1/3", "DOWN 2/3"],
            ),
            # haproxy counts down i = health - rise + 1: the first of three failures is 2/3
            ("fall 3", fully_up(2, 3), "---", ["UP 2/3", "UP 1/3", "DOWN"]),
            ("rise 2", fully_down(2, 3), "++", ["DOWN 1/2", "UP"]),
            ("rise 1 fall 1", fully_up(1, 1), "-+-", ["DOWN", "UP", "DOWN"]),
            # flapping: never reaches UP from DOWN, never reaches DOWN from UP
            ("flap down", fully_down(3, 2), "+-+-+-", ["DOWN 1/3", "DOWN"] * 3),
            ("flap up", fully_up(3, 2), "-+-+-+", ["UP 1/2", "UP"] * 3),
            ("stay down", fully_down(3, 2), "---", ["DOWN"] * 3),
            ("stay up", fully_up(3, 2), "+++", ["UP"] * 3),
        ]
        for name, start, outcomes, expected in table:
            with self.subTest(name):
                self.assertEqual(statuses(start, outcomes), expected)

    def test_timeout_is_a_failure(self) -> None:
        """A timeout counts like a refused connect."""
        record = next_record(fully_up(3, 2), TIMEOUT, 1.0)
        self.assertEqual((record.status(), record.last), ("UP 1/2", TIMEOUT))

    def test_local_error_is_not_counted(self) -> None:
        """A ``SOCKERR`` result returns the very same record, whatever the state."""
        for record in [discovered(3, 2, 0.0), fully_up(3, 2), fully_down(3, 2)]:
            self.assertIs(next_record(record, EMFILE, 5.0), record)

    def test_last_result(self) -> None:
        """Every counted result becomes ``last``, even one that leaves the counter at 0."""
        record = next_record(fully_down(3, 2), TIMEOUT, 1.0)
        self.assertEqual((record.health, record.last), (0, TIMEOUT))


class CounterTests(SynchronousTestCase):
    """``failures``, ``downs``, ``changed_at`` and ``downtime`` follow haproxy's stats."""

    def test_failures_count_while_health_is_above_zero(self) -> None:
        """Failures are counted while they lower health, not once fully DOWN (haproxy chkfail)."""
        record = fully_up(3, 2)
        for second in range(1, 6):
            record = next_record(record, REFUSED, float(second))
        self.assertEqual((record.failures, record.downs), (2, 1))

    def test_changed_at_moves_only_on_transitions(self) -> None:
        """``changed_at`` is the time of the last UP<->DOWN change."""
        record = fully_up(3, 2, 1.0)
        self.assertEqual(record.changed_at, 1.0)
        record = next_record(record, REFUSED, 2.0)
        self.assertEqual(record.changed_at, 1.0)
        record = next_record(record, REFUSED, 3.0)
        self.assertEqual(record.changed_at, 3.0)

    def test_downtime(self) -> None:
        """Downtime sums the DOWN periods; the current one is added by ``total_downtime``."""
        record = discovered(1, 1, 0.0)
        self.assertEqual(record.total_downtime(4.0), 4.0)
        record = next_record(record, OK, 4.0)  # DOWN (unchecked) 0..4
        record = next_record(record, REFUSED, 10.0)
        self.assertEqual((record.downtime, record.total_downtime(15.0)), (4.0, 9.0))
        record = next_record(record, OK, 20.0)  # DOWN 10..20
        self.assertEqual((record.downtime, record.total_downtime(99.0)), (14.0, 14.0))
        self.assertEqual(record.downs, 1)


class InvariantTests(SynchronousTestCase):
    """Properties that hold for any sequence of results."""

    @settings(derandomize=True, max_examples=200)
    @given(
        rise=st.integers(1, 6),
        fall=st.integers(1, 6),
        outcomes=st.lists(st.sampled_from([OK, REFUSED, TIMEOUT, EMFILE]), max_size=30),
    )
    def test_any_sequence(self, rise: int, fall: int, outcomes: list[CheckResult]) -> None:
        """Health stays in range; ``rise`` successes make it UP and ``fall`` failures DOWN."""
        record = discovered(rise, fall, 0.0)
        for second, outcome in enumerate(outcomes, start=1):
            record = next_record(record, outcome, float(second))
            self.assertTrue(0 <= record.health <= rise + fall - 1)
            self.assertEqual(record.is_up, record.health >= rise)
        up, down = record, record
        for _ in range(rise):
            up = next_record(up, OK, 100.0)
        for _ in range(fall):
            down = next_record(down, REFUSED, 100.0)
        self.assertEqual((up.status(), down.status()), ("UP", "DOWN"))


class ResumedTests(SynchronousTestCase):
    """A re-registered address keeps its counters but must pass a check to be routed."""

    def test_up_record_goes_pending(self) -> None:
        """An UP record resumes as INI, not routable, its counts kept and DOWN from now."""
        record = next_record(next_record(fully_up(3, 2), REFUSED, 1.0), OK, 2.0)
        again = resumed(record, 10.0)
        self.assertEqual((again.status(), again.is_up, again.last), ("INI", False, None))
        self.assertEqual((again.failures, again.downs, again.changed_at), (1, 0, 10.0))
        back = next_record(again, OK, 12.0)
        self.assertEqual((back.status(), back.total_downtime(12.0)), ("UP", 2.0))

    def test_down_record_keeps_its_down_period(self) -> None:
        """A DOWN record resumes as INI with its last change, so its downtime runs on."""
        record = next_record(next_record(fully_up(1, 1), REFUSED, 5.0), REFUSED, 6.0)
        again = resumed(record, 10.0)
        self.assertEqual((again.status(), again.changed_at, again.downs), ("INI", 5.0, 1))
        self.assertEqual(next_record(again, REFUSED, 11.0).total_downtime(11.0), 6.0)
