"""The HTTP resources on the stats port (default 127.0.0.1:1936).

* ``/`` is haproxy's stats page; ``/;csv`` and ``/;json`` are its CSV and JSON exports, and
  ``;up`` (hide DOWN servers) and ``;norefresh`` (no ``Refresh: 5`` header) combine with them
  as in haproxy (``/;up;norefresh``).  All of them come from one
  :class:`~ddiscover.stats.snapshot.Snapshot`, read at most once a second and each body
  rendered once per snapshot, so a page left open or a scraper costs the reactor little;
  a body is made and written a slice per reactor turn, so no request stalls the proxy.
* ``/metrics`` is the Prometheus exposition (:mod:`ddiscover.stats.metrics`).
* ``/health`` answers Docker's ``HEALTHCHECK`` and load balancers: 200 only while ddiscover
  serves and its view of etcd is known current (``in_sync``); 503 with the reason otherwise
  (stopping, etcd unreachable, the watch loop stopped, no word from etcd for too long).  The
  listeners keep forwarding to the last known backends meanwhile; the 503 says the view may be
  stale, read live at each request, not from the one-second snapshot.

With ``--stats-auth user:password`` every path but ``/health`` needs HTTP basic auth, and a
``POST`` to the page applies an admin action (:mod:`ddiscover.stats.admin`) to the servers it
names, then redirects back.  Without it, admin actions are refused.
"""

from __future__ import annotations

import hmac
import json

from hyperlink import URL
from twisted.internet.interfaces import IReactorTime
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from ddiscover.proxy.listeners import Listeners
from ddiscover.registry.watcher import RegistryWatcher, WatchState
from ddiscover.stats.admin import AdminError, apply_action
from ddiscover.stats.formats import csv_slices, json_slices
from ddiscover.stats.metrics import MetricsResource, metrics_registry
from ddiscover.stats.page import View, page_slices
from ddiscover.stats.snapshot import Snapshots, serve
from ddiscover.stats.state import StatsSources, last_error

REFRESH = 5
"""Seconds between reloads of the page, as haproxy's ``stats refresh 5s``."""


def not_in_sync(watcher: RegistryWatcher, now: float) -> str | None:
    """Why the watch is not known to match etcd now, in one line; ``None`` when it is."""
    if watcher.in_sync:
        return None
    error = last_error(watcher)
    detail = "" if error is None else f": {error}"
    if not watcher.alive and watcher.state is not WatchState.STARTING:
        return f"the registry watch loop is not running{detail}"
    if watcher.state is not WatchState.WATCHING:
        return f"registry watch is {watcher.state.value}{detail}"
    last = watcher.last_sync_at
    if last is None:
        return "no listing of etcd has completed yet"
    return f"no word from etcd for {now - last:.0f}s{detail}"


class HealthResource(Resource):
    """``GET /health``: 200 only while ddiscover serves with a view of etcd known current.

    503 otherwise, with the reason in ``reason``: stopping, the first listing not done yet,
    etcd unreachable, or no word from it for longer than a healthy watch waits.
    """

    isLeaf = True

    def __init__(
        self, clock: IReactorTime, watcher: RegistryWatcher, listeners: Listeners
    ) -> None:
        super().__init__()
        self._clock = clock
        self._watcher = watcher
        self._listeners = listeners

    def render_GET(self, request: Request) -> bytes:
        now = self._clock.seconds()
        watcher = self._watcher
        frontends = self._listeners.frontends()
        serving = bool(self._listeners.running)
        reason = "stopping" if not serving else not_in_sync(watcher, now)
        last = watcher.last_sync_at
        body = {
            "status": "serving" if reason is None else "stopping" if not serving else "degraded",
            "reason": reason,
            "registry": {
                "state": watcher.state.value,
                "alive": watcher.alive,
                "in_sync": watcher.in_sync,
                "last_sync_age": None if last is None else round(now - last, 3),
                "last_error": last_error(watcher),
                "endpoint": str(watcher.endpoint),
            },
            "services": len(frontends),
            "listening": sum(1 for f in frontends.values() if f.listening),
            "connections": self._listeners.active,
        }
        request.setResponseCode(200 if reason is None else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache")
        return json.dumps(body).encode() + b"\n"


def _text(request: Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return message.encode() + b"\n"


class _Unauthorized(Resource):
    """The answer to a request without the right credentials: 401 and a Basic challenge."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Basic realm="ddiscover stats", charset="UTF-8"')
        return _text(request, 401, "authentication required")


class StatsView(Resource):
    """``/`` and its ``;``-options: the page (GET), CSV, JSON, and admin actions (POST)."""

    isLeaf = True

    def __init__(
        self, sources: StatsSources, snapshots: Snapshots, options: frozenset[str]
    ) -> None:
        super().__init__()
        self._sources = sources
        self._snapshots = snapshots
        self._options = options
        self._view = View(hide_down="up" in options, refresh="norefresh" not in options)

    def render_GET(self, request: Request) -> int:
        request.setHeader(b"cache-control", b"no-cache")
        if "json" in self._options:
            request.setHeader(b"content-type", b"application/json")
            return serve(self._snapshots, request, "json", lambda s: json_slices(s.rows))
        if self._view.refresh:
            request.setHeader(b"refresh", str(REFRESH).encode())
        if "csv" in self._options:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return serve(self._snapshots, request, "csv", lambda s: csv_slices(s.rows))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        view = self._view
        return serve(self._snapshots, request, view, lambda s: page_slices(s.state, s.rows, view))

    def render_POST(self, request: Request) -> bytes:
        """Apply ``action`` to the servers ``s`` of service ``b``, then go back to the page."""
        if self._sources.config.stats_auth is None:
            return _text(request, 403, "admin actions need --stats-auth")
        if not _same_origin(request):
            return _text(request, 403, "cross-site form posts are refused")
        args: dict[bytes, list[bytes]] = request.args or {}
        service = b"".join(args.get(b"b", [])[:1]).decode("utf-8", "replace")
        action = b"".join(args.get(b"action", [])[:1]).decode("utf-8", "replace")
        servers = [s.decode("utf-8", "replace") for s in args.get(b"s", [])]
        try:
            apply_action(self._sources.listeners, service, servers, action)
        except AdminError as e:
            return _text(request, 400, str(e))
        self._snapshots.invalidate()
        request.setResponseCode(303)
        request.setHeader(b"location", self._view.path().encode())
        return b""


def _same_origin(request: Request) -> bool:
    """Whether a browser says the request comes from a page of this site, or says nothing.

    Browsers send ``Origin`` with every form POST; a page on another site that makes the
    operator's browser post here (with its cached credentials) names that other site.
    """
    origin = request.getHeader("origin")
    if origin is None:
        return True
    host = request.getHeader("host") or ""
    try:
        parsed = URL.from_text(origin)
    except ValueError:
        return False
    name = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    authority = name if parsed.port in (None, 80) else f"{name}:{parsed.port}"
    return authority == host


class StatsRoot(Resource):
    """The root of the stats port; checks credentials for every path but ``/health``.

    ``sources`` are the live parts every path reads.
    """

    def __init__(self, sources: StatsSources) -> None:
        super().__init__()
        self.sources = sources
        self.snapshots = Snapshots(sources.clock, sources.state, read_steps=sources.read_steps)
        auth = sources.config.stats_auth
        self._credentials = None if auth is None else (auth[0].encode(), auth[1].encode())
        self.putChild(b"health", HealthResource(sources.clock, sources.watcher, sources.listeners))
        self.putChild(
            b"metrics",
            MetricsResource(metrics_registry(self.snapshots.state), self.snapshots),
        )

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if path != b"health" and not self._authorized(request):
            return _Unauthorized()
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path and not path.startswith(b";"):
            return notFound()
        options = frozenset(path.decode("ascii", "replace").split(";")[1:])
        if request.postpath or not options <= {"csv", "json", "up", "norefresh"}:
            return notFound()
        return StatsView(self.sources, self.snapshots, options)

    def _authorized(self, request: Request) -> bool:
        if self._credentials is None:
            return True
        user, password = self._credentials
        # Both compared every time, in constant time, so timing tells nothing.
        return hmac.compare_digest(request.getUser(), user) & hmac.compare_digest(
            request.getPassword(), password
        )
