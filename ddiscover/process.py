"""Process-wide settings that belong to the edge, not to any one service."""

from __future__ import annotations

import resource

from ddiscover._log import make_logger

log = make_logger()


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; every proxied connection costs two fds.

    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warn(
                "cannot raise the open-files limit from {soft} to {hard}: {error}",
                soft=soft,
                hard=hard,
                error=e,
            )
            return soft
        log.info("raised the open-files limit from {soft} to {hard}", soft=soft, hard=hard)
        return hard
    return soft
