"""Tests for :mod:`ddiscover.stats.admin`: admin actions and what they log."""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.balancer import Admin
from ddiscover.stats.admin import AdminError, apply_action
from tests.stats import Running


class ApplyActionTests(SynchronousTestCase):
    """``apply_action`` on a running ddiscover whose ``web`` has a1 UP and a2 DOWN."""

    def setUp(self) -> None:
        self.running = Running(self)
        self.listeners = self.running.listeners

    def logged(self, servers: list[str], action: str) -> list[str]:
        with capturedLogs() as events:
            apply_action(self.listeners, "web", servers, action)
        return [
            event["log_format"].format(**event)
            for event in events
            if event.get("log_namespace") == "ddiscover.stats.admin"
        ]

    def test_maintenance_in_haproxys_words(self) -> None:
        """Disabling the last available server logs haproxy's lines, outage included."""
        self.assertEqual(
            self.logged(["a1"], "disable"),
            [
                "Server web/a1 is going DOWN for maintenance. 0 active and 0 backup servers "
                "left. 0 sessions active, 0 requeued, 0 remaining in queue.",
                "service web has no server available!",
            ],
        )
        self.assertEqual(
            self.logged(["a1"], "enable"),
            ["Server web/a1 is UP/READY (leaving forced maintenance)."],
        )

    def test_drain(self) -> None:
        """Draining logs haproxy's line; draining again changes and logs nothing."""
        self.assertEqual(
            self.logged(["a2"], "drain"),
            [
                "Server web/a2 enters drain state. 1 active and 0 backup servers left. "
                "0 sessions active, 0 requeued, 0 remaining in queue."
            ],
        )
        self.assertEqual(self.logged(["a2"], "drain"), [])
        self.assertEqual(
            self.logged(["a2"], "enable"), ["Server web/a2 is UP/READY (leaving forced drain)."]
        )

    def test_changed_count(self) -> None:
        """The result counts the servers whose state changed; duplicates count once."""
        self.assertEqual(apply_action(self.listeners, "web", ["a1", "a1", "a2"], "drain"), 2)
        self.assertEqual(apply_action(self.listeners, "web", ["a1"], "drain"), 0)
        frontend = self.listeners.frontends()["web"]
        self.assertEqual(
            {frontend.balancer.admin(b) for b in frontend.balancer.backends}, {Admin.DRAIN}
        )

    def test_nothing_applied_when_one_name_is_wrong(self) -> None:
        """A stale form naming a server that left changes none of the others."""
        e = self.assertRaises(
            AdminError, apply_action, self.listeners, "web", ["a1", "gone"], "disable"
        )
        self.assertEqual(str(e), "service 'web' has no server 'gone'")
        frontend = self.listeners.frontends()["web"]
        self.assertEqual(
            {frontend.balancer.admin(b) for b in frontend.balancer.backends}, {Admin.READY}
        )
