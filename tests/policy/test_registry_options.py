"""The registry's per-service ``options`` key: accepted whole, or rejected with one line."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.model import PolicyError, Source
from ddiscover.policy.registry_options import MAX_BYTES, parse_options
from ddiscover.policy.values import Balance, CheckKind

KEY = "/backends/web/options"


class OptionsTests(SynchronousTestCase):
    """Valid options become a layer; anything wrong rejects this service's options only."""

    def rejection(self, raw: str) -> str:
        with self.assertRaises(PolicyError) as caught:
            parse_options(KEY, raw)
        return str(caught.exception)

    def test_valid(self) -> None:
        """Each key is parsed and knows it came from this registry key."""
        layer = parse_options(
            KEY, '{"balance": "leastconn", "check": "http", "slowstart": "30s", "rise": 2}'
        )
        self.assertEqual(layer.settings["balance"].value, Balance.LEASTCONN)
        self.assertEqual(layer.settings["check"].value, CheckKind.HTTP)
        self.assertEqual(layer.settings["slowstart"].value, 30.0)
        origin = layer.settings["rise"].origin
        self.assertEqual((origin.source, origin.where), (Source.REGISTRY, KEY))

    def test_empty_object(self) -> None:
        """An empty object says nothing."""
        self.assertEqual(dict(parse_options(KEY, "{}").settings), {})

    def test_rejections(self) -> None:
        """Each kind of bad value has its own line, starting with the registry key."""
        cases = {
            "{": f"{KEY}: options is not JSON: Expecting property name enclosed in double "
            "quotes at line 1 column 2",
            "[1]": f"{KEY}: options must be a JSON object of keys, got an array",
            "null": f"{KEY}: options must be a JSON object of keys, got null",
            '"x"': f"{KEY}: options must be a JSON object of keys, got a string",
            '{"rise": 2, "rise": 3}': f'{KEY}: options key "rise" is given twice',
            '{"balance": "fastest"}': f"{KEY}: options balance must be one of roundrobin, "
            'leastconn, random, source, got "fastest"',
            '{"check_port": null}': f"{KEY}: options check_port must be a whole number from 1 "
            "to 65535, got null",
            '{"colour": 1}': f'{KEY}: options unknown key "colour"',
        }
        for raw, line in cases.items():
            self.assertEqual(self.rejection(raw), line)

    def test_too_large(self) -> None:
        """A value past the size limit is refused before it is parsed."""
        raw = '{"check_path": "/' + "a" * MAX_BYTES + '"}'
        self.assertEqual(self.rejection(raw), f"{KEY}: options is larger than {MAX_BYTES} bytes")
