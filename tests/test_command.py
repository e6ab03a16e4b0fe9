"""Tests for :mod:`ddiscover.command`: the level-filtered log twistd's application gets."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import Application, IService, Service
from twisted.logger import FileLogObserver, ILogObserver, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from ddiscover._log import set_level
from ddiscover.command import twistd_observer, with_log_level


class _Options(dict[str, Any]):
    """A subcommand's options, with twistd's own as ``parent``."""

    def __init__(self, parent: dict[str, Any] | None) -> None:
        super().__init__()
        if parent is not None:
            self.parent = parent


class WithLogLevelTests(SynchronousTestCase):
    """``with_log_level`` under twistd and outside it."""

    def setUp(self) -> None:
        self.addCleanup(set_level, "info")

    def test_sets_the_applications_observer(self) -> None:
        """Attached to twistd's application, the root service sets a filtering observer, which
        twistd then starts logging to."""
        child = Service()
        root = with_log_level(child, "warn", _Options({"nodaemon": True, "logfile": None}))
        application = Application("ddiscover")
        root.setServiceParent(application)
        self.assertIs(child.parent, root)
        self.assertIs(root.parent, IService(application))
        observer = application.getComponent(ILogObserver)
        self.assertIsNotNone(observer)
        self.assertNotIsInstance(observer, FileLogObserver)  # the filter in front of it

    def test_filter_applies_the_level(self) -> None:
        """The observer it sets drops what is below the level."""
        written: list[str] = []

        class Out:
            def write(self, text: str) -> None:
                written.append(text)

            def flush(self) -> None:
                pass

        self.patch(sys, "stdout", Out())
        application = Application("ddiscover")
        with_log_level(Service(), "warn", _Options({"nodaemon": True})).setServiceParent(
            application
        )
        observer = application.getComponent(ILogObserver)
        for level in ("info", "warn"):
            observer(
                {
                    "log_level": LogLevel.levelWithName(level),
                    "log_format": level,
                    "log_namespace": "x",
                    "log_time": 0.0,
                }
            )
        self.assertEqual([line.split(" ", 2)[-1] for line in written], ["warn\n"])

    def test_outside_twistd(self) -> None:
        """Without twistd's options nothing is set on the parent."""
        application = Application("ddiscover")
        with_log_level(Service(), "info", _Options(None)).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver))

    def test_twistd_decides(self) -> None:
        """With --logger or --syslog, twistd's own choice stands; twist has its own filter."""
        self.assertIsNone(twistd_observer({"nodaemon": True, "logger": "my.observer"}))
        self.assertIsNone(twistd_observer({"nodaemon": True, "syslog": True}))
        self.assertIsNone(twistd_observer({"logLevel": "info", "logFile": None}))  # twist
        self.assertIsInstance(twistd_observer({"logfile": "-", "nodaemon": True}), FileLogObserver)
