"""Tests for :class:`ddiscover.app.Discovery` and :func:`ddiscover.catalog.diff`."""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.app import Discovery
from ddiscover.catalog import Address, Backend, Catalog, Service, diff
from ddiscover.health.checker import HealthChecker
from ddiscover.proxy.listeners import Listeners

WEB = Service("web", 80, frozenset({Backend("a", Address("10.0.0.1", 8080))}))


class Consumer:
    """Records each catalog it reconciles with; raises ``error`` first if given one."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.seen: list[Catalog] = []

    def budgeted(self, catalog: Catalog) -> Catalog:
        return catalog

    def reconcile(self, catalog: Catalog) -> None:
        self.seen.append(catalog)
        if self.error is not None:
            raise self.error


class DiscoveryTests(SynchronousTestCase):
    """Each catalog reaches every consumer as it is, whatever another one does."""

    def discovery(self, checker: Consumer, listeners: Consumer) -> Discovery:
        return Discovery(cast(HealthChecker, checker), cast(Listeners, listeners))

    def test_passes_the_catalog_itself(self) -> None:
        """Both consumers get the very catalog object published."""
        checker, listeners = Consumer(), Consumer()
        catalog = Catalog(cast(Any, {"web": WEB}))
        self.discovery(checker, listeners).apply(catalog)
        self.assertIs(checker.seen[0], catalog)
        self.assertIs(listeners.seen[0], catalog)

    def test_checker_bug_spares_listeners(self) -> None:
        """A checker that raises is logged with its traceback; the listeners still reconcile."""
        checker, listeners = Consumer(KeyError("bug")), Consumer()
        discovery = self.discovery(checker, listeners)
        catalog = Catalog(cast(Any, {"web": WEB}))
        with capturedLogs() as events:
            discovery.apply(catalog)
        self.assertEqual(listeners.seen, [catalog])
        self.assertIs(discovery.catalog, catalog)
        [failure] = [e for e in events if "log_failure" in e]
        self.assertEqual(failure["consumer"], "health")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_listeners_bug(self) -> None:
        """A listener set that raises does not raise out of apply, so the watch goes on."""
        checker, listeners = Consumer(), Consumer(RuntimeError("bug"))
        self.discovery(checker, listeners).apply(Catalog())
        self.assertEqual(len(checker.seen), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_budget_bug(self) -> None:
        """A bug in the listeners' budget cut still lets the catalog reach both consumers."""

        class BadBudget(Consumer):
            def budgeted(self, catalog: Catalog) -> Catalog:
                raise ValueError("bug")

        checker, listeners = Consumer(), BadBudget()
        catalog = Catalog({"web": WEB})
        self.discovery(checker, listeners).apply(catalog)
        self.assertEqual((checker.seen, listeners.seen), ([catalog], [catalog]))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class FirstCatalogTests(SynchronousTestCase):
    """The first-catalog hook (a second gc.freeze in production) runs exactly once."""

    def test_once_after_first_service(self) -> None:
        """Not for an empty catalog; once for the first with a service, after both consumers
        have it; never again; a hook that raises is logged and does not stop the catalog."""
        checker, listeners = Consumer(), Consumer()
        calls: list[tuple[int, int]] = []

        def hook() -> None:
            calls.append((len(checker.seen), len(listeners.seen)))
            raise RuntimeError("hook bug")

        discovery = Discovery(cast(HealthChecker, checker), cast(Listeners, listeners), hook)
        discovery.apply(Catalog())
        self.assertEqual(calls, [])
        discovery.apply(Catalog({"web": WEB}))
        discovery.apply(Catalog({"web": WEB}))
        self.assertEqual(calls, [(2, 2)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class _Untouchable(frozenset[Backend]):
    """A backend set that fails the test if it is compared element by element."""

    def __sub__(self, other: object) -> frozenset[Backend]:
        raise AssertionError("an unchanged service was compared backend by backend")


class DiffTests(SynchronousTestCase):
    """``diff`` skips services that are the same object in both catalogs."""

    def test_identical_service_skipped(self) -> None:
        """Only the service that is a new object is compared."""
        big = Service("big", 81, _Untouchable({Backend("b", Address("10.0.0.2", 80))}))
        web2 = Service("web", 80, WEB.backends | {Backend("c", Address("10.0.0.3", 80))})
        change = diff(
            Catalog(cast(Any, {"big": big, "web": WEB})),
            Catalog(cast(Any, {"big": big, "web": web2})),
        )
        self.assertEqual(dict(change.backends_added), {"web": web2.backends - WEB.backends})
        self.assertEqual(dict(change.backends_removed), {})
