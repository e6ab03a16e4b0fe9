"""Smooth weighted round-robin: O(1) per pick with equal weights, O(log n) with unequal ones.

With equal weights (the common case, and every service before weights existed) the servers
take turns in backend order, and the rotation goes on after the server picked last: a server
that comes UP (or a redispatch that takes one out of turn) does not restart it.

With unequal weights each server is due every ``1 / weight`` units of virtual time and is
picked when it is the most overdue: its k-th turn falls at ``(k - 1/2) / weight`` (the
Sainte-Laguë divisor sequence), the earliest turn goes first, and ties go to the server that
sorts first.  So a weight-2 and a weight-1 server alternate ``A B A A B A``: two of every
three, never two of the lesser in a row, and over any whole cycle each server gets exactly
its weight's share.  A server that joins is due half its interval after the current virtual
time, so it takes its share from now on rather than catching up on turns it missed while
DOWN; a weight change (slow start ramping it) rescales the time left to its next turn.  The
turns live in a :class:`~.heap.MemberHeap`.

The algorithm switches between the two forms when the weights become unequal (a slow start
begins, the registry changes a weight) or equal again, carrying the order of the coming
turns across.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence

from ddiscover.catalog import Address
from ddiscover.proxy.balance.heap import MemberHeap
from ddiscover.proxy.balance.member import Member


class RoundRobin:
    """Weighted round-robin; see the module docstring for the exact order."""

    def __init__(self) -> None:
        self._stride: dict[Member, float] = {}
        self._ring: list[Member] = []
        self._next = 0
        self._turns: MemberHeap | None = None
        self._now = 0.0

    def rebuild(self, members: Sequence[Member]) -> None:
        """Nothing to do: members come and go through join and leave."""

    def join(self, member: Member) -> None:
        stride = 1 / member.units
        uniform = self._turns is None and all(s == stride for s in self._first_stride())
        self._stride[member] = stride
        if uniform:
            orders = [m.order for m in self._ring]
            index = bisect.bisect_left(orders, member.order)
            self._ring.insert(index, member)
            if index < self._next:
                self._next += 1
            return
        self._turns = self._weighted()
        self._turns.set(member, (self._now + stride / 2, member.order))

    def leave(self, member: Member) -> None:
        if self._stride.pop(member, None) is None:
            return
        if self._turns is None:
            index = self._ring.index(member)
            del self._ring[index]
            if index < self._next:
                self._next -= 1
            if self._next >= len(self._ring):
                self._next = 0
        else:
            self._turns.discard(member)
            self._maybe_uniform()

    def reweight(self, member: Member) -> None:
        old = self._stride.get(member)
        if old is None:
            return
        stride = 1 / member.units
        if stride == old:
            return
        turns = self._turns = self._weighted()
        self._stride[member] = stride
        due = turns.lead(member)
        assert isinstance(due, float)
        turns.set(member, (self._now + (due - self._now) * stride / old, member.order))
        self._maybe_uniform()

    def loaded(self, member: Member) -> None:
        """Round-robin does not look at sessions."""

    def pick(self, client: str, exclude: Collection[Address]) -> Member | None:
        if self._turns is None:
            ring = self._ring
            count = len(ring)
            for step in range(count):
                index = (self._next + step) % count
                member = ring[index]
                if not exclude or member.address not in exclude:
                    self._next = (index + 1) % count
                    return member
            return None
        chosen = self._turns.first(exclude)
        if chosen is None:
            return None
        due = self._turns.lead(chosen)
        assert isinstance(due, float)
        self._now = due
        self._turns.set(chosen, (due + self._stride[chosen], chosen.order))
        return chosen

    def _first_stride(self) -> list[float]:
        return [self._stride[self._ring[0]]] if self._ring else []

    def _weighted(self) -> MemberHeap:
        """The turns as a heap; from the rotation, the coming turns keep their order."""
        if self._turns is not None:
            return self._turns
        turns = MemberHeap()
        count = len(self._ring)
        for step in range(count):
            member = self._ring[(self._next + step) % count]
            turns.set(member, (self._now + self._stride[member] * (step + 0.5), member.order))
        self._ring, self._next = [], 0
        return turns

    def _maybe_uniform(self) -> None:
        """Back to the rotation once every weight is equal, starting with the next one due."""
        if self._turns is None or len(set(self._stride.values())) > 1:
            return
        following = self._turns.first()
        self._ring = sorted(self._stride, key=lambda m: m.order)
        self._next = self._ring.index(following) if following is not None else 0
        self._turns = None
