"""Admin actions on servers, as haproxy's stats page offers them: drain, disable, enable.

``drain`` (haproxy's DRAIN) and ``disable`` (MAINT) both stop new connections to the server
and let the open ones finish, as haproxy does without ``shutdown-sessions``.  For a TCP proxy
without persistence they differ only in what they tell: DRAIN is a soft stop (take a healthy
server out gently), MAINT a hard one (the server is being worked on); every format shows
which.  ``enable`` makes it READY again.  Health checks go on in every state, so an enabled
server is routed to at once if it is UP.  The state is kept in the service's balancer for as
long as the backend stays registered.  Each change is logged in haproxy's words.

Only reachable with ``--stats-auth`` (see :mod:`ddiscover.stats.web`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ddiscover._log import make_logger
from ddiscover.proxy.balancer import Admin
from ddiscover.proxy.listeners import Listeners

log = make_logger()

ACTIONS = {"drain": Admin.DRAIN, "disable": Admin.MAINT, "enable": Admin.READY}


class AdminError(ValueError):
    """An action that cannot be applied; ``str()`` is the one-line reason for the client."""


def apply_action(listeners: Listeners, service: str, servers: Iterable[str], action: str) -> int:
    """Set the admin state of the named servers of ``service``; returns how many changed.

    Unknown names are an error and nothing is changed, so a form posted from a stale page
    does not half apply.
    """
    admin = ACTIONS.get(action)
    if admin is None:
        raise AdminError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    frontend = listeners.frontends().get(service)
    if frontend is None:
        raise AdminError(f"no service {service!r}")
    balancer = frontend.balancer
    by_id = {backend.id: backend for backend in balancer.backends}
    wanted = list(dict.fromkeys(servers))
    unknown = [name for name in wanted if name not in by_id]
    if unknown:
        raise AdminError(f"service {service!r} has no server {', '.join(map(repr, unknown))}")
    changed = 0
    for name in wanted:
        backend = by_id[name]
        before = balancer.admin(backend)
        if before is admin:
            continue
        balancer.set_admin(backend, admin)
        changed += 1
        fields = {
            "service": service,
            "server": name,
            "active": balancer.available(),
            "sessions": frontend.servers[backend].scur,
        }
        if admin is Admin.MAINT:
            log.warn(
                "Server {service}/{server} is going DOWN for maintenance. {active} active and "
                "0 backup servers left. {sessions} sessions active, 0 requeued, 0 remaining "
                "in queue.",
                **fields,
            )
        elif admin is Admin.DRAIN:
            log.warn(
                "Server {service}/{server} enters drain state. {active} active and 0 backup "
                "servers left. {sessions} sessions active, 0 requeued, 0 remaining in queue.",
                **fields,
            )
        else:
            log.info(
                "Server {service}/{server} is UP/READY (leaving forced {previous}).",
                previous="maintenance" if before is Admin.MAINT else "drain",
                **fields,
            )
    if changed and admin is not Admin.READY and balancer.available() == 0:
        log.error("service {service} has no server available!", service=service)
    return changed
