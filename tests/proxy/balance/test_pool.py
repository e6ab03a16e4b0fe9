"""The pool: which servers may be chosen (backup, panic, holds), slow start and sessions."""

from __future__ import annotations

from collections import Counter

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.values import Balance
from ddiscover.proxy.balance.member import ServerSpec
from ddiscover.proxy.balance.pool import Tier
from tests.proxy.balance.support import backend, picks, pool


class BackupTests(SynchronousTestCase):
    """Backup servers take traffic only when no primary is UP."""

    def test_backups_only_when_no_primary_is_up(self) -> None:
        """The backups share the load once the last primary is DOWN, and stop when one is back."""
        target = pool(weights={"a": 1, "b": 1}, backups=("x", "y"))
        self.assertEqual(set(picks(target, 6)), {"a", "b"})
        target.set_up(backend("a"), False)
        self.assertEqual(set(picks(target, 6)), {"b"})
        target.set_up(backend("b"), False)
        self.assertEqual((target.tier, set(picks(target, 6))), (Tier.BACKUP, {"x", "y"}))
        target.set_up(backend("a"), True)
        self.assertEqual((target.tier, set(picks(target, 6))), (Tier.PRIMARY, {"a"}))

    def test_nothing_up(self) -> None:
        """With nothing UP (and panic off) there is no choice."""
        target = pool(backups=("x",), up=False)
        self.assertIsNone(target.pick())
        self.assertEqual(target.routable, 0)

    def test_held_and_zero_weight(self) -> None:
        """A held server, or one of weight 0, gets no new connection."""
        target = pool(weights={"a": 1, "b": 0, "c": 1})
        target.set_held(backend("c"), True)
        self.assertEqual(set(picks(target, 4)), {"a"})
        target.set_held(backend("c"), False)
        self.assertEqual(set(picks(target, 4)), {"a", "c"})


class PanicTests(SynchronousTestCase):
    """Below ``panic_threshold`` percent of primaries UP, every primary gets traffic."""

    def setUp(self) -> None:
        self.target = pool(
            weights={n: 1 for n in "abcd"}, backups=("x",), panic_threshold=50, up=False
        )
        self.target.set_up(backend("x"), True)

    def test_threshold(self) -> None:
        """One of four UP (25%) panics to all four; two of four (50%) does not."""
        self.target.set_up(backend("a"), True)
        self.assertEqual((self.target.tier, set(picks(self.target, 8))), (Tier.PANIC, set("abcd")))
        self.target.set_up(backend("b"), True)
        self.assertEqual(
            (self.target.tier, set(picks(self.target, 8))), (Tier.PRIMARY, {"a", "b"})
        )

    def test_backups_before_panic(self) -> None:
        """With no primary UP the UP backups take over rather than panic."""
        self.assertEqual((self.target.tier, set(picks(self.target, 3))), (Tier.BACKUP, {"x"}))
        self.target.set_up(backend("x"), False)
        self.assertEqual(self.target.tier, Tier.PANIC)

    def test_held_servers_stay_out(self) -> None:
        """Panic never routes to a server an operator or a check holds out."""
        self.target.set_up(backend("a"), True)
        self.target.set_held(backend("d"), True)
        self.assertEqual((self.target.tier, set(picks(self.target, 8))), (Tier.PANIC, set("abc")))

    def test_off_by_default(self) -> None:
        """panic_threshold 0 never panics."""
        target = pool(weights={n: 1 for n in "abcd"}, up=False)
        target.set_up(backend("a"), True)
        self.assertEqual((target.tier, set(picks(target, 4))), (Tier.PRIMARY, {"a"}))


class SlowStartTests(SynchronousTestCase):
    """A server back UP ramps from 1% to full weight over ``slowstart`` on the clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.target = pool(weights={"a": 1, "b": 1}, clock=self.clock, slowstart=30.0)
        self.b = next(m for m in self.target.members if m.backend.id == "b")

    def test_not_at_start(self) -> None:
        """Servers UP for the first time take full weight at once."""
        self.assertEqual(self.b.throttle, 100)
        self.assertEqual(Counter(picks(self.target, 10)), {"a": 5, "b": 5})

    def test_ramp(self) -> None:
        """Back UP after DOWN, the weight grows linearly; at the end the ramp is over."""
        self.target.set_up(backend("b"), False)
        self.clock.advance(100)
        self.target.set_up(backend("b"), True)
        self.assertEqual(self.b.throttle, 1)
        self.clock.advance(3)
        self.target.advance()
        self.assertEqual((self.b.throttle, self.b.units), (10, 0.1))
        self.assertEqual(Counter(picks(self.target, 110)), {"a": 100, "b": 10})
        self.clock.advance(12)
        self.target.advance()
        self.assertEqual(self.b.throttle, 50)
        self.clock.advance(15)
        picks(self.target, 1)
        self.assertEqual((self.b.throttle, self.b.ramp_start), (100, None))
        self.assertEqual(Counter(picks(self.target, 10)), {"a": 5, "b": 5})

    def test_down_again_ends_the_ramp(self) -> None:
        """A ramping server that goes DOWN starts over next time."""
        self.target.set_up(backend("b"), False)
        self.target.set_up(backend("b"), True)
        self.clock.advance(15)
        self.target.set_up(backend("b"), False)
        self.assertEqual((self.b.throttle, self.b.ramp_start), (100, None))
        self.target.set_up(backend("b"), True)
        self.assertEqual(self.b.throttle, 1)

    def test_ramp_for_every_algorithm(self) -> None:
        """The ramp weighs on least connections and random too."""
        for balance in (Balance.LEASTCONN, Balance.RANDOM):
            clock = Clock()
            target = pool(balance, weights={"a": 1, "b": 1}, clock=clock, slowstart=10.0)
            target.set_up(backend("b"), False)
            target.set_up(backend("b"), True)
            clock.advance(1)  # 10%
            held = [target.pick() for _ in range(110)]
            shares = Counter(m.backend.id for m in held if m is not None)
            self.assertLess(shares["b"], 20, balance)


class SessionTests(SynchronousTestCase):
    """Every pick counts a session until it is released."""

    def test_counts(self) -> None:
        """Picks count up, releases count down, never below zero."""
        target = pool()
        member = target.pick()
        assert member is not None
        self.assertEqual(member.sessions, 1)
        target.release(member)
        target.release(member)
        self.assertEqual(member.sessions, 0)

    def test_release_after_removal(self) -> None:
        """A session released after its server left the service changes nothing else."""
        target = pool()
        member = target.pick()
        assert member is not None
        target.update([ServerSpec(backend("b")), ServerSpec(backend("c"))])
        target.release(member)
        self.assertEqual((member.sessions, member.routable), (0, False))
        self.assertEqual(set(picks(target, 4)), {"b", "c"})


class UpdateTests(SynchronousTestCase):
    """Changes of the service's servers and of its policy keep the state that still applies."""

    def test_state_kept(self) -> None:
        """A server still present keeps its health and sessions; a new one starts not UP."""
        target = pool()
        member = target.pick()
        assert member is not None
        target.update([ServerSpec(backend(n)) for n in "abcd"])
        kept = next(m for m in target.members if m.backend == member.backend)
        self.assertIs(kept, member)
        self.assertEqual((kept.sessions, kept.up), (1, True))
        self.assertEqual(set(picks(target, 6)), set("abc"))

    def test_weight_change(self) -> None:
        """A new weight from the registry takes effect at once."""
        target = pool(weights={"a": 1, "b": 1})
        target.update([ServerSpec(backend("a"), 3), ServerSpec(backend("b"), 1)])
        counts = Counter(picks(target, 400))
        self.assertLessEqual(abs(counts["a"] - 300), 1)
        target.update([ServerSpec(backend("a"), 0), ServerSpec(backend("b"), 1)])
        self.assertEqual(set(picks(target, 4)), {"b"})

    def test_configure(self) -> None:
        """Switching the algorithm keeps sessions and health and applies the new one."""
        target = pool()
        held = target.pick()
        target.configure(Balance.LEASTCONN, slowstart=0.0, panic_threshold=0)
        assert held is not None
        self.assertEqual(held.sessions, 1)
        self.assertNotEqual(target.pick(), held)
        self.assertEqual(target.routable, 3)
