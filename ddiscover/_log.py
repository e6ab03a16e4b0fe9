"""The one place that binds txaio to Twisted, so every module logs through ``twisted.logger``.

Use ``log = make_logger()`` at module or class level: txaio names the logger after the caller
and turns disabled levels into no-ops, so ``log.debug`` on a hot path costs one empty call.
"""

from collections.abc import Callable
from typing import Any

import txaio

txaio.use_twisted()

LEVELS = ("critical", "error", "warn", "info", "debug", "trace")

make_logger: Callable[[], Any] = txaio.make_logger


def set_level(level: str) -> None:
    """Set the level of every txaio logger, including ones made before this call."""
    txaio.set_global_log_level(level)
