"""Tests for :mod:`ddiscover.proxy.loops`: backends that are our own listeners are refused."""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.proxy.loops import LoopGuard, host_addresses


def web(*backends: tuple[str, str, int]) -> Catalog:
    """Service ``web`` on port 80 and ``db`` on 5432, ``web`` with these backends."""
    return Catalog(
        {
            "web": Service(
                "web", 80, frozenset(Backend(i, Address(h, p)) for i, h, p in backends)
            ),
            "db": Service("db", 5432),
        }
    )


class LoopGuardTests(SynchronousTestCase):
    """Which backends loop, for a wildcard and for a single listen address."""

    def guard(self, interface: str = "0.0.0.0") -> LoopGuard:
        return LoopGuard(interface, addresses=lambda: frozenset({"192.0.2.7", "2001:db8::7"}))

    def test_wildcard(self) -> None:
        """On 0.0.0.0, loopback, the wildcard, localhost and the host's own addresses on one
        of our ports loop; other ports, other hosts and hostnames do not."""
        looping = [
            ("a", "127.0.0.1", 80),
            ("b", "127.1.2.3", 5432),
            ("c", "::1", 80),
            ("d", "0.0.0.0", 80),
            ("e", "localhost", 80),
            ("f", "192.0.2.7", 80),
            ("g", "2001:db8::7", 5432),
        ]
        fine = [("h", "127.0.0.1", 8080), ("i", "10.0.0.9", 80), ("j", "web.internal", 80)]
        with capturedLogs() as events:
            result = self.guard().refuse(web(*looping, *fine))
        kept = {b.id for b in result.services["web"].backends}
        self.assertEqual(kept, {"h", "i", "j"})
        self.assertEqual(
            sorted(r.key for r in result.rejections), [f"web/{i}" for i, _, _ in looping]
        )
        self.assertEqual(len(events), len(looping))
        self.assertEqual(
            events[0]["rejection"],
            "web/a: backend 127.0.0.1:80 is ddiscover's own listener: refused as a loop",
        )

    def test_single_interface(self) -> None:
        """Listening on 127.0.0.2 only, 127.0.0.1:80 still loops (loopback range) but the
        host's other addresses do not."""
        guard = self.guard("127.0.0.2")
        result = guard.refuse(web(("a", "127.0.0.1", 80), ("b", "192.0.2.7", 80)))
        self.assertEqual({b.id for b in result.services["web"].backends}, {"b"})

    def test_logged_once(self) -> None:
        """The same looping backend in the next catalog is refused again, silently."""
        guard = self.guard()
        catalog = web(("a", "127.0.0.1", 80))
        with capturedLogs() as events:
            guard.refuse(catalog)
            again = guard.refuse(catalog)
        self.assertEqual(len(events), 1)
        self.assertEqual(again.services["web"].backends, frozenset())

    def test_nothing_to_refuse(self) -> None:
        """A catalog without loops is returned as it is."""
        catalog = web(("a", "10.0.0.1", 80))
        self.assertIs(self.guard().refuse(catalog), catalog)

    def test_host_addresses(self) -> None:
        """This host's addresses include loopback, read without DNS."""
        self.assertIn("127.0.0.1", host_addresses())


class LoopGuardIdentityTests(SynchronousTestCase):
    """A service the watcher kept as the same object stays the same object through the guard,
    so the checker and the listeners see no change in it."""

    def test_unchanged_service_same_object(self) -> None:
        guard = LoopGuard("0.0.0.0", addresses=frozenset)
        catalog = web(("a", "127.0.0.1", 80), ("b", "10.0.0.9", 80))
        first = guard.refuse(catalog).services["web"]
        second = guard.refuse(Catalog(dict(catalog.services), catalog.rejections))
        self.assertIs(second.services["web"], first)
        self.assertEqual({b.id for b in first.backends}, {"b"})

    def test_new_port_judged_again(self) -> None:
        """A backend on a port that becomes one of ours later loops from then on."""
        guard = LoopGuard("0.0.0.0", addresses=frozenset)
        alone = {"web": web(("a", "127.0.0.1", 5432)).services["web"]}
        self.assertEqual(guard.refuse(Catalog(alone)).rejections, frozenset())
        both = Catalog({**alone, "db": Service("db", 5432)})
        self.assertEqual([r.key for r in guard.refuse(both).rejections], ["web/a"])
