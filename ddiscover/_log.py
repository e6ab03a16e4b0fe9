"""The one place that binds txaio to Twisted, and the one place ``--log-level`` is applied.

Use ``log = make_logger()`` at module or class level: txaio names the logger after the caller
and turns disabled levels into no-ops, so ``log.debug`` on a hot path costs one empty call.

That governs only ddiscover's own loggers.  :func:`level_filter` puts a filter in front of a log
observer (:mod:`ddiscover.command` does it for twistd's), so the level governs every event,
Twisted's too; and at
``info`` or above it counts as debug the lines Twisted writes per connection or per listener,
which ddiscover says better itself or which say nothing to an operator: the access line of a
``twisted.web`` site, "Starting factory"/"Stopping factory" of every client connection pool, and
a port's "... starting on 8080" and "(TCP Port 8080 Closed)".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import txaio
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
)
from zope.interface import implementer

txaio.use_twisted()

LEVELS = ("critical", "error", "warn", "info", "debug", "trace")

# txaio binds these at use_twisted(), so mypy cannot see them as module attributes.
make_logger: Callable[[], Any] = getattr(txaio, "make_logger")  # noqa: B009


def set_level(level: str) -> None:
    """Set the level of every txaio logger, including ones made before this call."""
    getattr(txaio, "set_global_log_level")(level)  # noqa: B009


def twisted_level(level: str) -> LogLevel:
    """The Twisted level of one of :data:`LEVELS` (Twisted has no ``trace``: ``debug``)."""
    return LogLevel.debug if level == "trace" else LogLevel.levelWithName(level)


_LISTENER_LINE = re.compile(r"^(?:\S+ starting on \S+|\((?:TCP|UDP|UNIX) Port \S+ Closed\))$")
_FACTORY_FORMATS = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})
_ACCESS_LOG_NAMESPACE = "twisted.python.log"
"""Where ``twisted.web`` writes its access lines when it has no log file of its own."""


def is_twisted_chatter(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is one of Twisted's per-connection or per-listener info lines."""
    if event.get("log_level") is not LogLevel.info:
        return False
    if event.get("log_namespace") == _ACCESS_LOG_NAMESPACE:
        return True
    if event.get("log_format") in _FACTORY_FORMATS:
        return True
    text = event.get("log_text")
    return event.get("log_namespace") == "log_legacy" and bool(
        isinstance(text, str) and _LISTENER_LINE.match(text)
    )


@implementer(ILogFilterPredicate)
class _QuietTwisted:
    """Drops :func:`is_twisted_chatter` events unless the level is debug."""

    def __init__(self, level: LogLevel) -> None:
        self._show = level is LogLevel.debug

    def __call__(self, event: Mapping[str, Any]) -> PredicateResult:
        if not self._show and is_twisted_chatter(event):
            return PredicateResult.no
        return PredicateResult.maybe


def level_filter(observer: ILogObserver, level: str) -> ILogObserver:
    """``observer`` behind a filter that lets through only events at ``level`` or above."""
    threshold = twisted_level(level)
    return FilteringLogObserver(
        observer,
        [_QuietTwisted(threshold), LogLevelFilterPredicate(defaultLogLevel=threshold)],
    )
