"""Tests for :mod:`ddiscover._log`: ``--log-level`` applied to every event, Twisted's too."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger, LogLevel, capturedLogs, formatEvent
from twisted.python import log as legacy
from twisted.trial.unittest import SynchronousTestCase

from ddiscover._log import is_twisted_chatter, level_filter, twisted_level


def real_twisted_events() -> list[dict[str, Any]]:
    """Events as Twisted itself emits them: a factory starting and stopping (what every etcd
    connection pool does), a port opening and closing, an access line of twisted.web."""
    with capturedLogs() as events:
        factory = Factory()
        factory.doStart()
        factory.doStop()
        legacy.msg("ServiceProxy starting on 8080")
        legacy.msg("(TCP Port 8080 Closed)")
        legacy.logfile.write('"127.0.0.1" - - [x] "GET /health HTTP/1.1" 200 161 "-" "curl"\n')
    return list(events)


def passed(level: str, events: list[dict[str, Any]]) -> list[str]:
    """The lines of ``events`` that a filter at ``level`` lets through."""
    out: list[dict[str, Any]] = []
    observer = level_filter(cast(ILogObserver, out.append), level)
    for event in events:
        observer(event)
    return [formatEvent(e) for e in out]


class LevelFilterTests(SynchronousTestCase):
    """The filter twistd's log gets."""

    def test_twisted_chatter_is_debug(self) -> None:
        """At info, none of Twisted's per-connection or per-listener lines pass; at debug, all."""
        events = real_twisted_events()
        self.assertEqual(len(events), 5)
        self.assertTrue(all(is_twisted_chatter(e) for e in events))
        self.assertEqual(passed("info", events), [])
        self.assertEqual(len(passed("debug", events)), 5)
        self.assertEqual(len(passed("trace", events)), 5)

    def test_levels(self) -> None:
        """Each level lets through what is at or above it, whoever logged it."""
        with capturedLogs() as events:
            log = Logger(namespace="twisted.scripts._twistd_unix.UnixAppLogger")
            log.info("twistd starting up.")
            Logger(namespace="ddiscover.app").debug("detail")
            Logger(namespace="ddiscover.app").warn("service web: bad port")
            legacy.err(RuntimeError("boom"), "ServiceProxy starting on 8080")
        lines = {level: passed(level, list(events)) for level in ("debug", "info", "warn")}
        self.assertEqual(len(lines["debug"]), 4)
        self.assertEqual(len(lines["info"]), 3)
        self.assertEqual(lines["warn"][0], "service web: bad port")
        self.assertEqual(len(lines["warn"]), 2)  # an error keeps its line, chatter or not
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_twisted_level(self) -> None:
        """haproxy's level names map to Twisted's; trace, which Twisted lacks, is debug."""
        self.assertEqual(twisted_level("warn"), LogLevel.warn)
        self.assertEqual(twisted_level("trace"), LogLevel.debug)
        self.assertEqual(twisted_level("critical"), LogLevel.critical)
