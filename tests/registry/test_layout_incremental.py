"""Tests for :class:`ddiscover.registry.layout.Layout`: hostile keys are rejected one by one,
a change costs work for its own directory only, and unchanged services keep their identity."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.registry.layout import (
    MAX_KEY_DEPTH,
    MAX_PORTS_PER_SERVICE,
    Entry,
    Layout,
    build_catalog,
)

WEB = {"/backends/web/port": Entry("80", 1), "/backends/web/a": Entry("10.0.0.1:8080", 2)}
WEB_SERVICE = Service("web", 80, frozenset({Backend("a", Address("10.0.0.1", 8080))}))


def layout_of(entries: dict[str, Entry]) -> Layout:
    """A layout of ``/backends`` holding ``entries``."""
    layout = Layout("/backends")
    for key, entry in entries.items():
        layout.set(key, entry)
    return layout


class HostileKeyTests(SynchronousTestCase):
    """A key too deep, too many ports or a huge value is rejected alone, in one short line."""

    def test_deep_key(self) -> None:
        """A key 600 levels deep is one rejection; web still works."""
        deep = "/backends/" + "d/" * 600 + "x"
        catalog = build_catalog("/backends", {**WEB, deep: Entry("1.2.3.4:80", 3)}, Catalog())
        self.assertEqual(catalog.services, {"web": WEB_SERVICE})
        [rejection] = catalog.rejections
        self.assertEqual(rejection.reason, f"key is 601 levels deep, more than {MAX_KEY_DEPTH}")
        self.assertLess(len(rejection.key), 300)
        self.assertIn("(1211 bytes)", rejection.key)

    def test_deepest_allowed(self) -> None:
        """A service name with slashes up to the limit is still a service."""
        name = "/".join(["n"] * (MAX_KEY_DEPTH - 1))
        keys = {
            f"/backends/{name}/port": Entry("81", 1),
            f"/backends/{name}/a": WEB["/backends/web/a"],
        }
        catalog = build_catalog("/backends", keys, Catalog())
        self.assertEqual(set(catalog.services), {name})

    def test_too_many_ports(self) -> None:
        """A port key of 1,500 ports (about 9 KB) is rejected; web keeps its listener."""
        ports = ",".join(str(p) for p in range(10000, 11500))
        keys = {**WEB, "/backends/many/port": Entry(ports, 3)}
        catalog = build_catalog("/backends", keys, Catalog())
        self.assertEqual(catalog.services, {"web": WEB_SERVICE})
        [rejection] = catalog.rejections
        self.assertEqual(rejection.key, "/backends/many/port")
        self.assertTrue(
            rejection.reason.endswith(f"list 1500 ports, more than {MAX_PORTS_PER_SERVICE}")
        )
        self.assertIn(f"({len(ports)} bytes)", rejection.reason)
        self.assertLess(len(rejection.reason), 400)

    def test_most_ports_allowed(self) -> None:
        """A port key of exactly the limit is fine."""
        ports = ",".join(str(p) for p in range(10000, 10000 + MAX_PORTS_PER_SERVICE))
        catalog = build_catalog("/backends", {"/backends/many/port": Entry(ports, 1)}, Catalog())
        self.assertEqual(len(catalog.services), MAX_PORTS_PER_SERVICE)

    def test_huge_value(self) -> None:
        """A 1 MB backend value is quoted in a couple of hundred characters with its size."""
        keys = {**WEB, "/backends/web/huge": Entry("x" * 10**6, 3)}
        catalog = build_catalog("/backends", keys, Catalog())
        self.assertEqual(catalog.services, {"web": WEB_SERVICE})
        [rejection] = catalog.rejections
        self.assertLess(len(rejection.reason), 400)
        self.assertIn("(1000000 bytes)", rejection.reason)


class IncrementalTests(SynchronousTestCase):
    """A change re-derives only its own directory; unchanged services are the same object."""

    def setUp(self) -> None:
        keys = dict(WEB)
        keys["/backends/big/port"] = Entry("81", 3)
        for n in range(1000):
            keys[f"/backends/big/b{n}"] = Entry(f"10.1.{n // 250}.{n % 250 + 1}:80", 4 + n)
        self.layout = layout_of(keys)
        self.catalog = self.layout.build(Catalog())

    def test_change_elsewhere_is_cheap(self) -> None:
        """A new backend of web costs a handful of operations, not one per backend of big."""
        before = self.layout.work
        self.layout.set("/backends/web/b", Entry("10.0.0.2:8080", 2000))
        catalog = self.layout.build(self.catalog)
        self.assertEqual(self.layout.work - before, 2)  # one parse, one derivation of web
        self.assertIs(catalog.services["big"], self.catalog.services["big"])
        self.assertIsNot(catalog.services["web"], self.catalog.services["web"])
        self.assertEqual(len(catalog.services["web"].backends), 2)

    def test_burst_is_one_derivation(self) -> None:
        """100 changes to big, built once, are 100 parses and one derivation of big."""
        before = self.layout.work
        for n in range(100):
            self.layout.set(f"/backends/big/b{n}", Entry(f"10.2.0.{n + 1}:80", 3000 + n))
        catalog = self.layout.build(self.catalog)
        self.assertEqual(self.layout.work - before, 100 + 1)
        self.assertIs(catalog.services["web"], self.catalog.services["web"])
        self.assertIn(Backend("b5", Address("10.2.0.6", 80)), catalog.services["big"].backends)

    def test_rewrite_same_value(self) -> None:
        """Re-deriving a directory whose backends did not change keeps the same Service."""
        self.layout.set("/backends/big/b1", Entry("10.1.0.2:80", 5000))
        catalog = self.layout.build(self.catalog)
        self.assertIs(catalog.services["big"], self.catalog.services["big"])

    def test_removals(self) -> None:
        """Removing every key of a directory removes its service; an unknown key is a no-op."""
        self.layout.remove("/backends/web/a")
        self.layout.remove("/backends/web/port")
        self.layout.remove("/backends/nothing/here")
        catalog = self.layout.build(self.catalog)
        self.assertEqual(set(catalog.services), {"big"})


keys = st.sampled_from(
    [
        "/backends/web/port",
        "/backends/web/a",
        "/backends/web/b",
        "/backends/app/port",
        "/backends/app/x",
        "/backends/app:443/port",
        "/backends/app:443/y",
        "/backends/loose",
        "/other/key",
    ]
)
values = st.sampled_from(["80", "443", "80,443", "10.0.0.1:80", "10.0.0.2:80,443", "bad"])
steps = st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=30)


class EquivalenceTests(SynchronousTestCase):
    """Built step by step, a layout gives the catalog a fresh build of the same keys gives."""

    @settings(derandomize=True, max_examples=300, deadline=None)
    @given(steps, st.integers(min_value=1, max_value=5))
    def test_same_as_fresh(self, changes: list[tuple[str, str | None]], every: int) -> None:
        """After any sequence of sets and removals, built every few steps."""
        layout = Layout("/backends")
        current: dict[str, Entry] = {}
        catalog = Catalog()
        for step, (key, value) in enumerate(changes):
            if value is None:
                current.pop(key, None)
                layout.remove(key)
            else:
                current[key] = Entry(value, step)
                layout.set(key, current[key])
            if step % every == 0:
                fresh = build_catalog("/backends", current, catalog)
                catalog = layout.build(catalog)
                self.assertEqual(catalog, fresh)
        self.assertEqual(layout.build(catalog), build_catalog("/backends", current, catalog))
