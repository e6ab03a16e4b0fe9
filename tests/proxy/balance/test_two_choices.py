"""Power of two choices: two servers drawn by weight, the less loaded one taken."""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.values import Balance
from ddiscover.proxy.balance.member import ServerSpec
from tests.proxy.balance.support import backend, picks, pool


class TwoChoicesTests(SynchronousTestCase):
    """The preference for the less loaded of two random servers."""

    def test_loaded_server_avoided(self) -> None:
        """A server with more sessions than every other is never chosen: one of two draws wins."""
        target = pool(Balance.RANDOM)
        busy = next(m for m in target.members if m.backend.id == "a")
        busy.sessions = 10
        counts = Counter(picks(target, 1000))
        self.assertNotIn("a", counts)
        self.assertGreater(min(counts["b"], counts["c"]), 400)

    def test_weights_when_idle(self) -> None:
        """Among idle servers the first draw wins, so choices follow the weights."""
        counts = Counter(picks(pool(Balance.RANDOM, weights={"a": 3, "b": 1}), 4000))
        self.assertLess(abs(counts["a"] / 4000 - 0.75), 0.03)

    def test_deterministic(self) -> None:
        """The same seed gives the same choices."""
        self.assertEqual(
            picks(pool(Balance.RANDOM, seed=7), 50), picks(pool(Balance.RANDOM, seed=7), 50)
        )

    def test_many_servers_and_departures(self) -> None:
        """Slots grow past the first eight, and a server that leaves is never drawn."""
        names = {f"s{i:02}": 1 for i in range(20)}
        target = pool(Balance.RANDOM, weights=names)
        target.set_up(backend("s05"), False)
        counts = Counter(target.pick().backend.id for _ in range(2000))  # type: ignore[union-attr]
        self.assertEqual(len(counts), 19)
        self.assertNotIn("s05", counts)

    def test_exclude(self) -> None:
        """A redispatch draws among the servers not yet tried."""
        target = pool(Balance.RANDOM)
        excluded = {backend("a").address, backend("b").address}
        chosen = {target.pick(exclude=excluded).backend.id for _ in range(20)}  # type: ignore[union-attr]
        self.assertEqual(chosen, {"c"})
        self.assertIsNone(target.pick(exclude=excluded | {backend("c").address}))

    def test_single_server(self) -> None:
        """One server is always the choice."""
        target = pool(Balance.RANDOM, weights={"a": 1})
        self.assertEqual(picks(target, 3), "aaa")
        target.update([ServerSpec(backend("a")), ServerSpec(backend("b"))])
        self.assertEqual(picks(target, 2), "aa")
