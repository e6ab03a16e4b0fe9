"""Tests for :mod:`ddiscover.registrar.tap`: what ``twistd ddiscover-register`` loads."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.registrar.tap import Options


class ImportTests(SynchronousTestCase):
    """The registrar runs beside every backend: it must stay small."""

    def test_does_not_import_the_app(self) -> None:
        """Importing the registrar's tap (what twistd does) loads none of the proxy.

        Only the lean connector its ``--check`` shares with the health checker may come along.
        """
        code = (
            "import sys, ddiscover.registrar.tap\n"
            "shared = {'ddiscover.proxy', 'ddiscover.proxy.fastpath', 'ddiscover.proxy.reactor'}\n"
            "print(sorted(m for m in sys.modules if m not in shared and m.startswith(("
            "'ddiscover.app', 'ddiscover.proxy', 'ddiscover.modes', 'ddiscover.stats'))))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        self.assertEqual(out.strip(), "[]")


class _Twistd(usage.Options):
    """A parent command that runs ``ddiscover-register`` as twistd does."""

    subCommands: ClassVar[list[list[Any]]] = [  # noqa: N815 (Twisted's name)
        ["ddiscover-register", None, lambda: Options({}), "registrar"]
    ]


class OneLineErrorTests(SynchronousTestCase):
    """Under twistd a bad option ends the process with one line, not the usage text."""

    def test_bad_value(self) -> None:
        """The line names the command, the option and the value, and points at --help."""
        args = ["--etcd", "h:1", "--service", "web", "--port", "80", "--address", "a:1"]
        e = self.assertRaises(
            SystemExit, _Twistd().parseOptions, ["ddiscover-register", *args, "--ttl", "1"]
        )
        self.assertEqual(
            e.code,
            "twistd ddiscover-register: --ttl must be a whole number >= 2, got '1' "
            "(see twistd ddiscover-register --help)",
        )
