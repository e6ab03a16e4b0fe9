"""What one stats request costs the reactor, with 1,000 services x 5 backends (run by hand).

ddiscover is built by ``build_service`` on fakes (``tests.fake_etcd``, a memory reactor,
check endpoints that all succeed), so the numbers are the stats code alone: no etcd, no
sockets.  Each request goes through the real stats resource with a ``DummyRequest``; the
bench times every reactor turn the request needs (the request itself, then each iteration
of the calls due at the same instant, as a sliced render schedules them), and reports per
path the total reactor time, the longest turn (median over the repeats; ``worst_turn_ms``
the worst, often a garbage collection of the whole heap), the turns and those over 20 ms,
for a cold request (its snapshot older than its lifetime) and a warm one (another request
within the same second).

Usage: ``.venv/bin/python bench/stats_render.py [--services 1000] [--backends 5]
[--repeat 5]``; run it on an older checkout with ``PYTHONPATH=<checkout>`` to compare.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hyperlink import URL
from treq.testing import StubTreq
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from ddiscover.app import build_service
from ddiscover.config import Config
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.registry.client import HTTPClientLike
from tests.fake_endpoints import FakeEndpoints
from tests.fake_etcd import FakeEtcdV2Resource
from tests.proxy import PortsReactor

PATHS = ("/", "/;csv", "/;json", "/metrics", "/health")


def build(services: int, backends: int) -> tuple[PortsReactor, Resource]:
    """A running ddiscover on fakes with every backend UP, and the root of its stats site."""
    etcd = FakeEtcdV2Resource(history=10 * services * (backends + 1))
    http = StubTreq(etcd)
    reactor = PortsReactor()
    endpoints = FakeEndpoints()
    root = build_service(
        Config(
            etcd=(URL.from_text("http://etcd.test:2379"),),
            check_interval=3600.0,
            rise=1,
            maxconn=100_000,
        ),
        cast(ProxyReactor, reactor),
        http=cast(HTTPClientLike, http),
        endpoint_for=endpoints,
    )
    for s in range(services):
        etcd.set(f"/backends/svc{s:04d}/port", str(10_000 + s))
        for b in range(backends):
            etcd.set(f"/backends/svc{s:04d}/b{b}", f"10.1.{s % 250}.{b + 1}:{8000 + s}", ttl=30)
    root.startService()
    http.flush()
    reactor.advance(0.2)
    http.flush()
    for attempt in endpoints.pending():
        attempt.succeed()
    reactor.advance(1)
    (site,) = [s[1] for s in reactor.tcpServers if isinstance(s[1], Site)]
    resource: Resource = site.resource
    return reactor, resource


def one_turn(reactor: PortsReactor) -> None:
    """Run the calls due now, as one iteration of a real reactor does.

    ``Clock.advance(0)`` would also run the calls those schedule for now (a sliced render's
    next slice), all in one go; a real reactor runs them at its next iteration.
    """
    now = reactor.seconds()
    due = [call for call in reactor.calls if call.getTime() <= now]
    for call in due:
        reactor.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


def one_request(
    reactor: PortsReactor, root: Resource, path: str
) -> tuple[float, float, int, int, int]:
    """Total reactor seconds, longest turn, body bytes, turns, turns over 20 ms of a GET.

    A ``DummyRequest`` collects the body, so what is timed is the stats code's own work,
    not the socket's; the first turn includes the resource traversal.
    """
    request = DummyRequest([p.encode() for p in path.lstrip("/").split("/")])
    request.uri = path.encode()
    finished: list[object] = []
    request.notifyFinish().addBoth(finished.append)
    turns: list[float] = []
    start = time.perf_counter()
    resource = getChildForRequest(root, request)
    result = resource.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    turns.append(time.perf_counter() - start)
    while not finished:
        due = [c for c in reactor.getDelayedCalls() if c.getTime() <= reactor.seconds()]
        if not due:
            raise SystemExit(f"{path}: not finished after {len(turns)} turns")
        start = time.perf_counter()
        one_turn(reactor)
        turns.append(time.perf_counter() - start)
    slow = sum(1 for turn in turns if turn > 0.02)
    return sum(turns), max(turns), sum(len(c) for c in request.written), len(turns), slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reactor, root = build(args.services, args.backends)
    gc.collect()
    report: dict[str, Any] = {"services": args.services, "backends": args.backends}
    for path in PATHS:
        cold: list[tuple[float, float, int, int, int]] = []
        warm: list[tuple[float, float, int, int, int]] = []
        for _ in range(args.repeat):
            reactor.advance(1.5)
            cold.append(one_request(reactor, root, path))
            warm.append(one_request(reactor, root, path))
        report[path] = {
            kind: {
                "total_ms": round(statistics.median(r[0] for r in runs) * 1000, 1),
                "longest_turn_ms": round(statistics.median(r[1] for r in runs) * 1000, 1),
                "worst_turn_ms": round(max(r[1] for r in runs) * 1000, 1),
                "turns": runs[-1][3],
                "turns_over_20ms": sum(r[4] for r in runs),
                "bytes": runs[-1][2],
            }
            for kind, runs in (("cold", cold), ("warm", warm))
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
