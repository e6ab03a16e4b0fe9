"""The servers of one service and the choice among them: backup, panic, slow start, sessions.

The pool keeps every server's live state (:class:`~.member.Member`) and decides which of them
the service's algorithm may choose now, the *routable* set:

- normally the UP primary servers (not ``backup``, weight above 0, not held by an operator's
  DRAIN or MAINT or a check's drain);
- when no primary is UP, the UP ``backup`` servers (haproxy ``backup`` with ``option
  allbackups``: they share the load by the service's algorithm);
- in panic, every primary server that is not held, UP or not: when ``panic_threshold`` is
  above 0 and fewer than that percentage of the primaries are UP (and backups have not taken
  over), as Envoy does, routing to all of them rather than crushing the few that are left;
  redispatch takes care of the connects that fail.

Health, admin and weight changes update the routable set in O(1) plus the algorithm's
O(log n); only a change of tier (normal, backup, panic) or of the service's servers walks
them all.  A pick takes O(log n) (round-robin, least connections, random) or walks the ring
past the servers that may not be chosen (source).

Slow start (haproxy's ``slowstart``): a server that comes back UP after being DOWN has its
effective weight ramped linearly from 1% to 100% over ``slowstart`` seconds on the injected
clock, updated at each pick in whole percents; a server UP for the first time (at process
start, or newly registered) starts at full weight, as haproxy's never applies at start.

Sessions: every successful :meth:`Pool.pick` counts one session on the member it returns, and
the caller gives it back with :meth:`Pool.release` when the connection ends or its connect
fails, so least connections and random see live counts.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
from collections.abc import Collection, Iterable, Iterator

from twisted.internet.interfaces import IReactorTime

from ddiscover.catalog import Address, Backend
from ddiscover.policy.values import Balance
from ddiscover.proxy.balance.leastconn import LeastConn
from ddiscover.proxy.balance.member import Algorithm, Member, ServerSpec
from ddiscover.proxy.balance.roundrobin import RoundRobin
from ddiscover.proxy.balance.source import SourceHash
from ddiscover.proxy.balance.two_choices import TwoChoices


class Tier(enum.Enum):
    """Which servers the pool routes to now."""

    PRIMARY = "primary"
    BACKUP = "backup"
    PANIC = "panic"


def algorithm_for(balance: Balance, rng: random.Random) -> Algorithm:
    """The algorithm of a ``balance`` setting."""
    if balance is Balance.LEASTCONN:
        return LeastConn()
    if balance is Balance.RANDOM:
        return TwoChoices(rng)
    if balance is Balance.SOURCE:
        return SourceHash()
    return RoundRobin()


class Pool:
    """One service's servers, their state, and the choice of one for each new connection."""

    def __init__(
        self,
        clock: IReactorTime,
        rng: random.Random,
        balance: Balance = Balance.ROUNDROBIN,
        slowstart: float = 0.0,
        panic_threshold: int = 0,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._balance = balance
        self._algorithm = algorithm_for(balance, rng)
        self._slowstart = slowstart
        self._panic_threshold = panic_threshold
        self._members: dict[Backend, Member] = {}
        self._ramping: set[Member] = set()
        self._primaries = 0
        self._primaries_up = 0
        self._backups_up = 0
        self._routable = 0
        self.tier = Tier.PRIMARY

    @property
    def members(self) -> tuple[Member, ...]:
        """Every server of the service, in backend order."""
        return tuple(self._members.values())

    @property
    def routable(self) -> int:
        """How many servers may be chosen now."""
        return self._routable

    def configure(self, balance: Balance, slowstart: float, panic_threshold: int) -> None:
        """Apply a new policy; sessions, health and slow starts under way are kept."""
        self._slowstart = slowstart
        self._panic_threshold = panic_threshold
        if balance is not self._balance:
            self._balance = balance
            self._algorithm = algorithm_for(balance, self._rng)
            for member in self._members.values():
                member.routable = False
            self._algorithm.rebuild(self.members)
            self._routable = 0
        self._retier()

    def update(self, servers: Iterable[ServerSpec]) -> None:
        """Replace the service's servers; those still present keep their state."""
        specs = sorted(servers, key=lambda spec: spec.backend)
        old = self._members
        kept: dict[Backend, Member] = {}
        reweighted = []
        for order, spec in enumerate(specs):
            member = old.get(spec.backend)
            if member is None:
                member = Member(spec.backend, spec.weight, spec.backup, order)
            else:
                if member.weight != spec.weight and member.routable and spec.weight:
                    reweighted.append(member)
                member.weight, member.backup, member.order = spec.weight, spec.backup, order
            kept[spec.backend] = member
        for backend, member in old.items():
            if backend not in kept:
                self._set_routable(member, False)
                self._ramping.discard(member)
        self._members = kept
        self._algorithm.rebuild(self.members)
        for member in reweighted:
            self._algorithm.reweight(member)
        self._retier()

    def set_up(self, backend: Backend, up: bool) -> None:
        """Health changed: ``backend`` is UP (may get connections) or not."""
        member = self._members.get(backend)
        if member is None or member.up == up:
            return
        with self._recounted(member):
            member.up = up
            if up and member.was_up and self._slowstart > 0:
                member.ramp_start = self._clock.seconds()
                member.throttle = 1
                self._ramping.add(member)
            elif not up:
                self._end_ramp(member)
            member.was_up = member.was_up or up

    def set_held(self, backend: Backend, held: bool) -> None:
        """An operator's DRAIN or MAINT, or a check's drain, holds ``backend`` out, or not."""
        member = self._members.get(backend)
        if member is None or member.held == held:
            return
        with self._recounted(member):
            member.held = held

    def pick(self, client: str = "", exclude: Collection[Address] = ()) -> Member | None:
        """The server for a new connection from ``client``, counting its session, or ``None``.

        ``exclude`` holds the addresses a redispatch has already tried.
        """
        if self._ramping:
            self.advance()
        if not self._routable:
            return None
        member = self._algorithm.pick(client, exclude)
        if member is not None:
            member.sessions += 1
            self._algorithm.loaded(member)
        return member

    def release(self, member: Member) -> None:
        """A session counted by :meth:`pick` has ended (or its connect failed)."""
        member.sessions = max(0, member.sessions - 1)
        if member.routable:
            self._algorithm.loaded(member)

    def advance(self) -> None:
        """Bring slow-start weights up to the clock (the stats page calls it too)."""
        now = self._clock.seconds()
        for member in list(self._ramping):
            assert member.ramp_start is not None
            elapsed = now - member.ramp_start
            percent = min(100, max(1, math.floor(elapsed * 100 / self._slowstart)))
            if percent == member.throttle:
                continue
            member.throttle = percent
            if member.routable:
                self._algorithm.reweight(member)
            if percent == 100:
                self._end_ramp(member)

    def _end_ramp(self, member: Member) -> None:
        self._ramping.discard(member)
        member.ramp_start = None
        if member.throttle != 100:
            member.throttle = 100
            if member.routable:
                self._algorithm.reweight(member)

    def _eligible(self, member: Member) -> bool:
        return not member.held and member.weight > 0

    def _count(self, member: Member, sign: int) -> None:
        """Add (or take away) ``member``'s part in the counts the tier is decided by."""
        if not self._eligible(member):
            return
        if member.backup:
            self._backups_up += sign * member.up
        else:
            self._primaries += sign
            self._primaries_up += sign * member.up

    def _decide(self) -> Tier:
        if self._primaries_up == 0 and self._backups_up:
            return Tier.BACKUP
        threshold = self._panic_threshold
        if threshold and self._primaries_up * 100 < threshold * self._primaries:
            return Tier.PANIC
        return Tier.PRIMARY

    def _wanted(self, member: Member) -> bool:
        """Whether ``member`` may be chosen in the current tier."""
        if not self._eligible(member):
            return False
        if self.tier is Tier.BACKUP:
            return member.backup and member.up
        if self.tier is Tier.PANIC:
            return not member.backup
        return member.up and not member.backup

    def _set_routable(self, member: Member, routable: bool) -> None:
        if member.routable == routable:
            return
        member.routable = routable
        self._routable += 1 if routable else -1
        if routable:
            self._algorithm.join(member)
        else:
            self._algorithm.leave(member)

    @contextlib.contextmanager
    def _recounted(self, member: Member) -> Iterator[None]:
        """Around a change of ``member``: update the counts, the tier and its routability."""
        self._count(member, -1)
        yield
        self._count(member, +1)
        if self._decide() is not self.tier:
            self._retier()
        else:
            self._set_routable(member, self._wanted(member))

    def _retier(self) -> None:
        """Recount and decide the tier from scratch, then set every member's routability."""
        self._primaries = self._primaries_up = self._backups_up = 0
        for member in self._members.values():
            self._count(member, +1)
        self.tier = self._decide()
        for member in self._members.values():
            self._set_routable(member, self._wanted(member))
