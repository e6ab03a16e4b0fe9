"""Source hashing: sticky, shared by every host, and moving about 1/N of clients per change."""

from __future__ import annotations

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.values import Balance
from ddiscover.proxy.balance.member import ServerSpec
from ddiscover.proxy.balance.pool import Pool
from tests.proxy.balance.support import backend, pool

CLIENTS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10_000)]
SERVERS = {f"srv{i}": 1 for i in range(10)}


def _owners(target: Pool) -> dict[str, str]:
    owners = {}
    for client in CLIENTS:
        member = target.pick(client)
        assert member is not None
        owners[client] = member.backend.id
        target.release(member)
    return owners


class SourceTests(SynchronousTestCase):
    """Where 10,000 clients go, and how many move when a server comes or goes."""

    def setUp(self) -> None:
        self.target = pool(Balance.SOURCE, weights=SERVERS)
        self.before = _owners(self.target)

    def test_spread_and_stickiness(self) -> None:
        """Every server gets a fair share, and a client always goes to the same one."""
        shares = Counter(self.before.values())
        self.assertEqual(len(shares), 10)
        self.assertLess(max(shares.values()), 1300)
        self.assertGreater(min(shares.values()), 700)
        self.assertEqual(_owners(self.target), self.before)

    def test_same_on_every_host(self) -> None:
        """Another pool built from the same servers (another host) sends clients the same way."""
        self.assertEqual(_owners(pool(Balance.SOURCE, weights=SERVERS, seed=99)), self.before)

    def test_removal_moves_only_its_clients(self) -> None:
        """Removing a server moves exactly its clients, about 1/N of them."""
        self.target.update([ServerSpec(backend(n)) for n in SERVERS if n != "srv3"])
        after = _owners(self.target)
        moved = {c for c in CLIENTS if after[c] != self.before[c]}
        self.assertEqual(moved, {c for c in CLIENTS if self.before[c] == "srv3"})
        self.assertLess(len(moved), 1.3 * len(CLIENTS) / 10)

    def test_addition_moves_about_one_nth(self) -> None:
        """Adding an eleventh server moves about 1/11 of the clients, all of them to it."""
        self.target.update([ServerSpec(backend(n)) for n in [*SERVERS, "srv10"]])
        self.target.set_up(backend("srv10"), True)
        after = _owners(self.target)
        moved = [c for c in CLIENTS if after[c] != self.before[c]]
        self.assertEqual({after[c] for c in moved}, {"srv10"})
        self.assertLess(len(moved), 1.3 * len(CLIENTS) / 11)
        self.assertGreater(len(moved), 0.7 * len(CLIENTS) / 11)

    def test_down_and_back(self) -> None:
        """A server DOWN has its clients spread over the others; back UP, they return."""
        self.target.set_up(backend("srv4"), False)
        during = _owners(self.target)
        self.assertNotIn("srv4", during.values())
        self.assertEqual(
            {c for c in CLIENTS if during[c] != self.before[c]},
            {c for c in CLIENTS if self.before[c] == "srv4"},
        )
        self.target.set_up(backend("srv4"), True)
        self.assertEqual(_owners(self.target), self.before)

    def test_weight(self) -> None:
        """A weight-3 server owns about three times the clients of a weight-1 server."""
        target = pool(Balance.SOURCE, weights={"a": 3, "b": 1})
        shares = Counter(_owners(target).values())
        self.assertLess(abs(shares["a"] / len(CLIENTS) - 0.75), 0.05)

    def test_exclude(self) -> None:
        """A redispatch goes to the next server on the ring that was not tried."""
        client = CLIENTS[0]
        first = self.before[client]
        retry = self.target.pick(client, exclude={backend(first).address})
        assert retry is not None
        self.assertNotEqual(retry.backend.id, first)
