"""What both commands, ``twistd ddiscover`` and ``twistd ddiscover-register``, do at the edge.

:func:`with_log_level` applies ``--log-level`` to everything the process logs: ddiscover's own
loggers through txaio, and, under twistd, every event (Twisted's too) through a filter on the
application's log observer (:func:`ddiscover._log.level_filter`).  :class:`CommandOptions` makes
a bad option end twistd with one line instead of the whole usage text.  twistd starts logging only
after ``makeService``, so nothing it logs escapes the filter.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver, textFileLogObserver
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

from ddiscover._log import level_filter, set_level
from ddiscover.text import clip


class CommandOptions(usage.Options):
    """Options of a twistd subcommand whose errors are one line under twistd.

    twistd prints its whole usage text (about 60 lines, which is what ``docker logs`` shows)
    before the error of a subcommand's option.  Under twistd (``parent`` is set before a
    subcommand parses), a :class:`~twisted.python.usage.UsageError` ends the process here
    with ``twistd <command>: <error> (see twistd <command> --help)`` on stderr, exit status 1;
    elsewhere it propagates.
    """

    command = ""
    """The subcommand's name, as typed after ``twistd``."""

    def parseOptions(self, options: list[str] | None = None) -> None:  # noqa: N802 (Twisted's)
        """Parse ``options``; under twistd, a usage error exits with one line."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            raise SystemExit(
                f"twistd {self.command}: {clip(str(e))} (see twistd {self.command} --help)"
            ) from None


def twistd_observer(twistd: Mapping[str, Any]) -> ILogObserver | None:
    """The observer twistd makes from its own options (``--nodaemon``, ``--logfile``).

    ``None`` where twistd decides alone: with ``--logger`` it ignores the application's
    observer, and ``--syslog`` is left to it.  ``None`` too under another runner, such as
    ``twist``, which filters its log with its own ``--log-level``.
    """
    if "nodaemon" not in twistd or twistd.get("logger") or twistd.get("syslog"):
        return None
    path = twistd.get("logfile") or ""
    if path == "-" or (not path and twistd.get("nodaemon")):
        return textFileLogObserver(sys.stdout)
    return textFileLogObserver(LogFile.fromFullPath(path or "twistd.log"))


class LevelFilteredLog(MultiService):
    """The root service of a command: gives twistd's application a level-filtered log.

    twistd builds the service, attaches it to its application, and only then starts logging,
    with the application's ``ILogObserver`` if it has one; :meth:`setServiceParent` sets it.
    """

    def __init__(self, service: IService, observer: ILogObserver | None) -> None:
        super().__init__()
        self._observer = observer
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:  # noqa: N802 (Twisted's name)
        """Attach to ``parent``; if it is twistd's application, set its log observer."""
        if self._observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)


def with_log_level(service: IService, level: str, options: object) -> IService:
    """Apply ``level`` to ddiscover's loggers and, under twistd, to everything it logs.

    ``options`` are the command's parsed options; under twistd, their ``parent`` holds
    twistd's own.  Call it early: what is logged before applies the level only to ddiscover's
    own loggers.
    """
    set_level(level)
    twistd = getattr(options, "parent", None)
    observer = twistd_observer(twistd) if twistd is not None else None
    return LevelFilteredLog(service, level_filter(observer, level) if observer else None)
