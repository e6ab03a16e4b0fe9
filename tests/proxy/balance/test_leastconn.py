"""Least connections: fewest sessions relative to weight, ties in round-robin."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.values import Balance
from ddiscover.proxy.balance.member import Member
from ddiscover.proxy.balance.pool import Pool
from tests.proxy.balance.support import backend, picks, pool


def _open(target: Pool) -> Member:
    member = target.pick()
    assert member is not None
    return member


class LeastConnTests(SynchronousTestCase):
    """Choices under uneven session lengths."""

    def test_ties_rotate(self) -> None:
        """With equal loads the least recently picked server goes first: round-robin."""
        self.assertEqual(picks(pool(Balance.LEASTCONN), 6), "abcabc")

    def test_weights_when_idle(self) -> None:
        """Servers fill in proportion to their weights; with nothing held, the heaviest wins."""
        self.assertEqual(picks(pool(Balance.LEASTCONN, weights={"a": 2, "b": 1}), 3), "aaa")
        target = pool(Balance.LEASTCONN, weights={"a": 2, "b": 1})
        held = [_open(target).backend.id for _ in range(6)]
        self.assertEqual(held, list("abaaba"))

    def test_uneven_session_lengths(self) -> None:
        """Long sessions on one server steer new ones to the others; round-robin would not."""
        spreads = {}
        for balance in (Balance.LEASTCONN, Balance.ROUNDROBIN):
            target = pool(balance, weights={"a": 1, "b": 1})
            for _ in range(100):
                _open(target)  # a long session, never released here
                target.release(_open(target))  # a short one, over at once
            sessions = sorted(m.sessions for m in target.members)
            spreads[balance] = sessions[1] - sessions[0]
        self.assertEqual(spreads, {Balance.LEASTCONN: 0, Balance.ROUNDROBIN: 100})

    def test_released_sessions_count_down(self) -> None:
        """A server whose sessions end is preferred again."""
        target = pool(Balance.LEASTCONN)
        opened = [_open(target) for _ in range(6)]  # two each
        for member in opened:
            if member.backend.id == "b":
                target.release(member)
        self.assertEqual(_open(target).backend.id, "b")
        self.assertEqual(_open(target).backend.id, "b")
        self.assertEqual(_open(target).backend.id, "a")

    def test_exclude(self) -> None:
        """A redispatch takes the least loaded server not yet tried."""
        target = pool(Balance.LEASTCONN)
        chosen = target.pick(exclude={backend("a").address})
        assert chosen is not None
        self.assertEqual(chosen.backend.id, "b")
