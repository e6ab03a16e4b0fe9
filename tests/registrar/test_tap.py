"""Tests for :mod:`ddiscover.registrar.tap`: what ``twistd ddiscover-register`` loads."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase


class ImportTests(SynchronousTestCase):
    """The registrar runs beside every backend: it must stay small."""

    def test_does_not_import_the_app(self) -> None:
        """Importing the registrar's tap (what twistd does) loads none of the proxy."""
        code = (
            "import sys, ddiscover.registrar.tap\n"
            "print(sorted(m for m in sys.modules if m.startswith(('ddiscover.app', "
            "'ddiscover.proxy', 'ddiscover.stats'))))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        self.assertEqual(out.strip(), "[]")
