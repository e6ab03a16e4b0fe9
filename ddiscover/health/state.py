"""The rise/fall health of one backend address, as a frozen record and a pure transition.

This is haproxy's health counter (``src/check.c``, ``set_server_check_status``) without a clock
or a socket, so every timeline can be tested as a table.  The checker keeps one record per
address and replaces it with :func:`next_record` on every counted result.
"""

from __future__ import annotations

import attrs

from ddiscover.health.result import CheckResult


def _at_least_one(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} {value} must be at least 1")


def _within_counter(instance: HealthRecord, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= instance.full:
        raise ValueError(f"{attribute.name} {value} is outside 0..{instance.full}")


@attrs.frozen
class HealthRecord:
    """Where one backend stands on haproxy's health counter, plus the stats haproxy keeps for it.

    ``health`` runs from 0 to ``rise + fall - 1``; the backend is UP (routable) iff
    ``health >= rise``.  ``changed_at`` is the time of the last UP<->DOWN change, or of
    discovery; ``downtime`` is the seconds spent DOWN *before* the current DOWN period (see
    :meth:`total_downtime`); ``failures`` and ``downs`` are haproxy's ``chkfail`` and
    ``chkdown``; ``last`` is the last counted result.
    """

    rise: int = attrs.field(validator=_at_least_one)
    fall: int = attrs.field(validator=_at_least_one)
    health: int = attrs.field(validator=_within_counter)
    checked: bool
    last: CheckResult | None
    changed_at: float
    failures: int
    downs: int
    downtime: float

    @property
    def full(self) -> int:
        """The top of the counter, ``rise + fall - 1``: fully UP."""
        return self.rise + self.fall - 1

    @property
    def is_up(self) -> bool:
        """Whether the balancer may route to this backend."""
        return self.health >= self.rise

    def status(self) -> str:
        """The stats page's status text, computed as haproxy's ``stats.c`` does.

        ``UP`` and ``DOWN`` at the ends of the counter; ``UP i/fall`` while going down, where
        ``i = health - rise + 1`` is the number of further failures that take it DOWN (so with
        ``fall`` 3 the first failure shows ``UP 2/3``; with ``fall`` 2 it shows ``UP 1/2``);
        ``DOWN i/rise`` while going up, ``i`` successes seen; ``INI`` before any result.
        """
        if not self.checked:
            return "INI"
        if self.is_up:
            if self.health == self.full:
                return "UP"
            return f"UP {self.health - self.rise + 1}/{self.fall}"
        if self.health == 0:
            return "DOWN"
        return f"DOWN {self.health}/{self.rise}"

    def total_downtime(self, now: float) -> float:
        """Seconds spent DOWN since discovery, including the current DOWN period if any."""
        if self.is_up:
            return self.downtime
        return self.downtime + (now - self.changed_at)


def discovered(rise: int, fall: int, now: float) -> HealthRecord:
    """The record of a backend just found in the registry: DOWN, one success away from UP.

    This is ddiscover's one deliberate difference from haproxy, which starts a server at
    ``health = rise`` ("UP, but will fall down at first failure").  A backend appearing in etcd
    has never answered us, so it starts at ``health = rise - 1``: not routable until its first
    successful check, which takes it to fully UP (as Envoy requires one passing check).  A
    first failure takes it to 0, fully DOWN, without counting as an UP->DOWN transition.
    """
    return HealthRecord(
        rise=rise,
        fall=fall,
        health=rise - 1,
        checked=False,
        last=None,
        changed_at=now,
        failures=0,
        downs=0,
        downtime=0.0,
    )


def next_record(record: HealthRecord, result: CheckResult, now: float) -> HealthRecord:
    """Count one check (or proxied connect) result, exactly as haproxy's ``check.c`` does.

    A success below the top adds one, and reaching ``rise`` jumps to the top
    (``rise + fall - 1``): so a success while ``UP i/fall`` restores full health at once, and
    a backend rising from DOWN needs ``rise`` successes in a row.  A failure while
    ``health > 0`` counts in ``failures`` and subtracts one, and dropping below ``rise`` falls
    to 0: so a backend UP needs ``fall`` failures in a row to go DOWN, and one failure while
    rising starts the climb over.  A failure at 0 changes nothing but ``last`` (haproxy does
    not count it in ``chkfail`` either).  A result that does not count (``SOCKERR``, our own
    resource exhaustion) returns the record unchanged.
    """
    if not result.counts:
        return record
    failures = record.failures
    if result.ok:
        health = record.full if record.health + 1 >= record.rise else record.health + 1
    elif record.health > 0:
        failures += 1
        health = record.health - 1 if record.health - 1 >= record.rise else 0
    else:
        health = 0
    updated = attrs.evolve(record, health=health, checked=True, last=result, failures=failures)
    if updated.is_up == record.is_up:
        return updated
    if record.is_up:
        return attrs.evolve(updated, changed_at=now, downs=record.downs + 1)
    return attrs.evolve(
        updated, changed_at=now, downtime=record.downtime + (now - record.changed_at)
    )


def resumed(record: HealthRecord, now: float) -> HealthRecord:
    """The record of an address registered again: its counters kept, its verdict not.

    A backend that comes back at the same address (a restarted container) may not listen
    yet, so like a new one it is not routable until a check passes (``health = rise - 1``,
    shown ``INI``).  Check counts, ``downs`` and downtime are kept.  A record that was DOWN
    keeps its last change; one that was UP goes DOWN now, and that is its last change.
    """
    health = record.rise - 1
    if record.is_up:
        return attrs.evolve(record, health=health, checked=False, last=None, changed_at=now)
    return attrs.evolve(record, health=health, checked=False, last=None)
