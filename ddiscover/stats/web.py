"""The HTTP resources on the stats port (default 127.0.0.1:1936).

``/health`` answers Docker's ``HEALTHCHECK`` and load balancers: 200 while ddiscover serves,
with a JSON body that says whether the registry is in sync; 503 only when ddiscover itself
cannot serve (it is stopping).  An unreachable etcd is not a reason for 503: the listeners
keep forwarding to the last known backends.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource
from twisted.web.server import Request

from ddiscover.proxy.listeners import Listeners
from ddiscover.registry.watcher import RegistryWatcher, WatchState


class HealthResource(Resource):
    """``GET /health``: is ddiscover serving, and is its view of etcd current."""

    isLeaf = True

    def __init__(self, watcher: RegistryWatcher, listeners: Listeners) -> None:
        super().__init__()
        self._watcher = watcher
        self._listeners = listeners

    def render_GET(self, request: Request) -> bytes:
        frontends = self._listeners.frontends()
        serving = bool(self._listeners.running)
        body = {
            "status": "serving" if serving else "stopping",
            "registry": {
                "state": self._watcher.state.value,
                "in_sync": self._watcher.state is WatchState.WATCHING,
                "endpoint": str(self._watcher.endpoint),
            },
            "services": len(frontends),
            "listening": sum(1 for f in frontends.values() if f.listening),
            "connections": self._listeners.active,
        }
        request.setResponseCode(200 if serving else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache")
        return json.dumps(body).encode() + b"\n"


def stats_root(watcher: RegistryWatcher, listeners: Listeners) -> Resource:
    """The resource tree served on the stats port."""
    root = Resource()
    root.putChild(b"health", HealthResource(watcher, listeners))
    return root
