"""The one place that binds txaio to Twisted, so every module logs through ``twisted.logger``.

Use ``log = make_logger()`` at module or class level: txaio names the logger after the caller
and turns disabled levels into no-ops, so ``log.debug`` on a hot path costs one empty call.
"""

from collections.abc import Callable
from typing import Any

import txaio

txaio.use_twisted()

LEVELS = ("critical", "error", "warn", "info", "debug", "trace")

# txaio binds these at use_twisted(), so mypy cannot see them as module attributes.
make_logger: Callable[[], Any] = getattr(txaio, "make_logger")  # noqa: B009


def set_level(level: str) -> None:
    """Set the level of every txaio logger, including ones made before this call."""
    getattr(txaio, "set_global_log_level")(level)  # noqa: B009
