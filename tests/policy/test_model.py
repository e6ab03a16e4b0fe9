"""The policy value, its keys and the one-line errors about them."""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.model import (
    KEYS,
    Origin,
    PolicyError,
    ServicePolicy,
    Source,
    parse_layer,
    parse_setting,
    show,
)
from ddiscover.policy.values import Balance, ProxyVersion


class KeyTests(SynchronousTestCase):
    """Every key of the issue is a field, parsed and shown by its own rules."""

    def test_every_key(self) -> None:
        """The command line's per-service settings and the issue's new keys are all there."""
        self.assertEqual(
            set(KEYS),
            {
                "mode", "port", "balance", "weight", "maxconn", "connect_timeout",
                "idle_timeout", "retries", "check", "check_interval", "fastinter", "downinter",
                "rise", "fall", "check_port", "check_method", "check_path", "check_host",
                "check_expect", "check_send_proxy", "send_proxy", "accept_proxy", "slowstart",
                "error_limit", "panic_threshold",
            },
        )  # fmt: skip

    def test_parse(self) -> None:
        """A value is parsed into its final type."""
        self.assertEqual(parse_setting("slowstart", "30s"), 30.0)
        self.assertIs(parse_setting("balance", "source"), Balance.SOURCE)
        self.assertEqual(str(parse_setting("check_expect", [200, "300-399"])), "200,300-399")

    def test_bad_value(self) -> None:
        """A bad value names the key, what it must be, and the value as written."""
        with self.assertRaises(PolicyError) as caught:
            parse_setting("rise", 0)
        self.assertEqual(
            str(caught.exception), "rise must be a whole number from 1 to 1000, got 0"
        )
        self.assertEqual(caught.exception.key, "rise")

    def test_unknown_key(self) -> None:
        """An unknown key is named, with the closest known key when there is one."""
        with self.assertRaises(PolicyError) as caught:
            parse_setting("chek_path", "/")
        self.assertEqual(
            str(caught.exception), 'unknown key "chek_path"; did you mean check_path?'
        )
        with self.assertRaises(PolicyError) as caught:
            parse_setting("colour", "red")
        self.assertEqual(str(caught.exception), 'unknown key "colour"')

    def test_long_value_is_clipped(self) -> None:
        """A huge outside value is cut before it reaches the line."""
        with self.assertRaises(PolicyError) as caught:
            parse_setting("check_path", "x" * 100_000)
        self.assertLess(len(str(caught.exception)), 400)
        self.assertIn("(100002 bytes)", str(caught.exception))

    def test_show(self) -> None:
        """Values are shown as the docs write them."""
        policy = ServicePolicy()
        shown = {key: show(key, getattr(policy, key)) for key in KEYS}
        self.assertEqual(
            {k: shown[k] for k in ("check_interval", "send_proxy", "port", "check_expect")},
            {"check_interval": "2s", "send_proxy": "none", "port": "-", "check_expect": "200-399"},
        )
        self.assertEqual(show("accept_proxy", True), "true")


class LayerTests(SynchronousTestCase):
    """A table or object of keys is parsed as a whole."""

    def test_origins(self) -> None:
        """Each key gets the origin its source gives it."""
        layer = parse_layer(
            {"rise": 2, "fall": 5}, lambda key: Origin(Source.FILE_DEFAULTS, f"f:{key}")
        )
        self.assertEqual(layer.settings["fall"].value, 5)
        self.assertEqual(layer.settings["rise"].origin.where, "f:rise")

    def test_first_problem_and_count(self) -> None:
        """The first bad key is named (for its line) and the others are counted."""
        with self.assertRaises(PolicyError) as caught:
            parse_layer(
                {"rise": 2, "fall": 0, "check": "x", "nope": 1},
                lambda key: Origin(Source.REGISTRY, "k"),
            )
        self.assertEqual(
            str(caught.exception),
            "fall must be a whole number from 1 to 1000, got 0 (and 2 more problems)",
        )
        self.assertEqual(caught.exception.key, "fall")


class PolicyTests(SynchronousTestCase):
    """What the policy derives from its keys."""

    def test_intervals(self) -> None:
        """fastinter and downinter fall back to check_interval, as haproxy's do to inter."""
        policy = ServicePolicy(check_interval=4.0)
        self.assertEqual((policy.transition_interval, policy.down_interval), (4.0, 4.0))
        policy = attrs.evolve(policy, fastinter=1.0, downinter=10.0)
        self.assertEqual((policy.transition_interval, policy.down_interval), (1.0, 10.0))

    def test_check_timeout(self) -> None:
        """A check takes at most min(connect_timeout, check_interval), as today."""
        self.assertEqual(ServicePolicy(connect_timeout=5.0, check_interval=2.0).check_timeout, 2.0)
        self.assertEqual(ServicePolicy(connect_timeout=1.0, check_interval=2.0).check_timeout, 1.0)

    def test_check_proxy(self) -> None:
        """Checks send PROXY only with check_send_proxy: the service's version, else v1."""
        cases = {
            (False, ProxyVersion.V2): ProxyVersion.NONE,
            (True, ProxyVersion.V2): ProxyVersion.V2,
            (True, ProxyVersion.V1): ProxyVersion.V1,
            (True, ProxyVersion.NONE): ProxyVersion.V1,
        }
        for (forced, version), expected in cases.items():
            policy = ServicePolicy(check_send_proxy=forced, send_proxy=version)
            self.assertIs(policy.check_proxy, expected)

    def test_origin_text(self) -> None:
        """An origin says where the value was written."""
        self.assertEqual(
            [
                str(Origin(Source.DEFAULT)),
                str(Origin(Source.COMMAND_LINE, "--rise")),
                str(Origin(Source.REGISTRY, "/backends/web/options")),
                str(Origin(Source.FILE_SERVICE, "s.toml:4", '[services."web"]')),
            ],
            [
                "built-in default",
                "command line --rise",
                "registry /backends/web/options",
                's.toml:4 [services."web"]',
            ],
        )
