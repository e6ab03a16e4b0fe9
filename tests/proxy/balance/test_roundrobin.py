"""Smooth weighted round-robin: the exact order, and fairness when servers come and go."""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.balance.member import ServerSpec
from tests.proxy.balance.support import backend, picks, pool


class RoundRobinTests(SynchronousTestCase):
    """The order of picks for given weights."""

    def test_equal_weights_rotate(self) -> None:
        """Equal weights are a plain rotation in backend order."""
        self.assertEqual(picks(pool(), 9), "abcabcabc")

    def test_two_to_one(self) -> None:
        """A weight-2 server gets 2 of every 3, evenly: never two of the other in a row."""
        self.assertEqual(picks(pool(weights={"a": 2, "b": 1}), 12), "abaabaabaaba")

    def test_weighted_exclude(self) -> None:
        """With unequal weights a redispatch takes the next server due that was not tried."""
        target = pool(weights={"a": 2, "b": 1, "c": 1})
        first = target.pick(exclude={backend("a").address})
        assert first is not None
        self.assertEqual(first.backend.id, "b")
        self.assertEqual(picks(target, 4), "acaa")

    def test_weights_change_both_ways(self) -> None:
        """Rotation to weighted turns and back, keeping each server's share."""
        target = pool()
        picks(target, 2)
        target.update(
            [ServerSpec(backend("a")), ServerSpec(backend("b")), ServerSpec(backend("c"), 2)]
        )
        counts = Counter(picks(target, 400))
        shares = {"a": 100, "b": 100, "c": 200}
        self.assertTrue(all(abs(counts[n] - shares[n]) <= 1 for n in shares), counts)
        target.update([ServerSpec(backend(n)) for n in "abc"])
        sequence = picks(target, 9)
        self.assertEqual(sequence, sequence[:3] * 3)
        self.assertEqual(set(sequence[:3]), set("abc"))

    def test_exact_shares_per_cycle(self) -> None:
        """Over each cycle of total weight, every server gets exactly its weight."""
        target = pool(weights={"a": 5, "b": 1, "c": 1, "d": 3})
        sequence = picks(target, 100)
        for start in range(0, 100, 10):
            self.assertEqual(
                Counter(sequence[start : start + 10]), {"a": 5, "d": 3, "b": 1, "c": 1}
            )
        self.assertNotIn("aaa", sequence)

    def test_rejoin_does_not_burst(self) -> None:
        """A server back UP takes its share from now on, without catching up missed turns."""
        target = pool()
        self.assertEqual(picks(target, 3), "abc")
        target.set_up(backend("c"), False)
        self.assertEqual(picks(target, 6), "ababab")
        target.set_up(backend("c"), True)
        self.assertEqual(Counter(picks(target, 30)), {"a": 10, "b": 10, "c": 10})

    def test_update_keeps_the_rotation(self) -> None:
        """A change of the service's servers resumes the rotation instead of restarting it."""
        target = pool()
        self.assertEqual(picks(target, 2), "ab")
        target.update([ServerSpec(backend(n)) for n in "abcd"])
        target.set_up(backend("d"), True)
        self.assertEqual(picks(target, 1), "c")

    def test_exclude(self) -> None:
        """A redispatch skips the servers tried, and the rotation goes on after the one chosen."""
        target = pool()
        first = target.pick()
        assert first is not None
        retry = target.pick(exclude={first.address, backend("b").address})
        assert retry is not None
        self.assertEqual((first.backend.id, retry.backend.id), ("a", "c"))
        self.assertIsNone(target.pick(exclude={backend(n).address for n in "abc"}))
        # The rotation goes on after c, the server the redispatch took.
        self.assertEqual(picks(target, 4), "abca")
