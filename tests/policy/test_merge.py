"""The order the policy sources are stacked in, and the provenance of every value."""

from __future__ import annotations

from hyperlink import URL
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.config import Config
from ddiscover.policy.merge import BUILT_IN, command_line, merge, resolve
from ddiscover.policy.model import KEYS, Layer, Origin, Setting, Source
from ddiscover.policy.values import Balance


def _layer(source: Source, where: str, **values: object) -> Layer:
    return Layer({k: Setting(v, Origin(source, where)) for k, v in values.items()})


class MergeTests(SynchronousTestCase):
    """Later layers win, key by key, and each value keeps its origin."""

    def test_defaults(self) -> None:
        """With no layer every key is at its built-in default."""
        effective = merge([])
        self.assertEqual(effective.policy.rise, 3)
        self.assertEqual({str(o) for o in effective.origins.values()}, {"built-in default"})
        self.assertEqual(set(BUILT_IN.settings), set(KEYS))

    def test_command_line(self) -> None:
        """The command line's per-service options are a layer, named by their option."""
        config = Config(etcd=(URL.from_text("http://127.0.0.1:2379"),), rise=5, check_interval=1.0)
        effective = merge([command_line(config)])
        self.assertEqual((effective.policy.rise, effective.policy.check_interval), (5, 1.0))
        self.assertEqual(str(effective.origins["rise"]), "command line --rise")
        self.assertEqual(str(effective.origins["maxconn"]), "built-in default")

    def test_precedence(self) -> None:
        """Command line < file [defaults] < registry options < file [services] tables."""
        command = _layer(Source.COMMAND_LINE, "--rise", rise=4, fall=4, retries=4)
        file_defaults = _layer(
            Source.FILE_DEFAULTS, "f:2", rise=5, fall=5, balance=Balance.RANDOM, weight=9
        )
        registry = _layer(Source.REGISTRY, "/backends/web/options", fall=6, balance=Balance.SOURCE)
        glob = _layer(Source.FILE_SERVICE, "f:8", fall=7, weight=3)
        exact = _layer(Source.FILE_SERVICE, "f:12", weight=2)
        effective = resolve(command, file_defaults, registry, [glob, exact])
        policy = effective.policy
        self.assertEqual(
            (policy.retries, policy.rise, policy.balance, policy.fall, policy.weight),
            (4, 5, Balance.SOURCE, 7, 2),
        )
        self.assertEqual(
            {
                k: effective.origins[k].where
                for k in ("retries", "rise", "balance", "fall", "weight")
            },
            {
                "retries": "--rise",
                "rise": "f:2",
                "balance": "/backends/web/options",
                "fall": "f:8",
                "weight": "f:12",
            },
        )

    def test_rows(self) -> None:
        """The stats page gets every key with its shown value and its origin."""
        rows = merge([_layer(Source.REGISTRY, "/backends/web/options", slowstart=30.0)]).rows()
        self.assertEqual(len(rows), len(KEYS))
        self.assertIn(("slowstart", "30s", "registry /backends/web/options"), rows)
        self.assertIn(("rise", "3", "built-in default"), rows)
