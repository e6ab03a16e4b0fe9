"""Importing the configuration or the proxy must not import the HTTP or TLS stack.

Each check runs in a fresh interpreter, since this one has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

HTTP = ("twisted.web.client", "treq", "ddiscover.registry.client", "ddiscover.registry.tls")
HEAVY = ("OpenSSL", *HTTP)

_PROBE = """
import importlib, json, pkgutil, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*names: str) -> set[str]:
    """Every module a fresh interpreter holds after importing ``names`` and their submodules."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


class LightImportTests(SynchronousTestCase):
    """The modules every process imports stay light."""

    def assert_light(self, *names: str, heavy: tuple[str, ...] = HEAVY) -> None:
        """None of ``heavy`` is imported by ``names``."""
        modules = imported_by(*names)
        self.assertEqual([m for m in heavy if m in modules], [])

    def test_config(self) -> None:
        """``ddiscover.config`` (and the values it holds) imports neither OpenSSL nor treq."""
        self.assert_light("ddiscover.config", "ddiscover.registry.values")

    def test_proxy(self) -> None:
        """No module of ``ddiscover.proxy`` imports the HTTP stack or the registry's TLS.

        OpenSSL itself cannot be kept out: ``twisted.internet.tcp``, which every reactor
        imports, loads it for ``startTLS`` whenever pyOpenSSL is installed.
        """
        self.assert_light("ddiscover.proxy", heavy=HTTP)

    def test_probe_sees_heavy_imports(self) -> None:
        """The probe does see the stack where it is imported (so the checks above mean it)."""
        modules = imported_by("ddiscover.registry.client")
        self.assertIn("OpenSSL", modules)
        self.assertIn("twisted.web.client", modules)
