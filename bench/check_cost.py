"""CPU per TCP connect check, by way of connecting: run by hand, not in CI.

    .venv/bin/python bench/check_cost.py [--checks 5000] [--parallel 50]

Checks a loopback port that accepts and closes (a child process, so its CPU is not ours)
and a closed port, ``--checks`` times each with ``--parallel`` in flight, and prints this
process's CPU time (``time.process_time``) per check for:

``endpoint``   what the checker does: ``connect_check`` through ``TCP4ClientEndpoint``;
``connecttcp`` ``reactor.connectTCP`` with a tiny protocol that hangs up, and a timeout;
``lean``       the proxy's ``fastpath.connect`` (``LeanConnect``) with the same protocol;
``lean-none``  the same, with a factory that builds no protocol: the socket is closed at
               once, no transport is made (what ``probe.lean_endpoint_factory`` does).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from ddiscover.health.probe import connect_check
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure
from ddiscover.proxy import fastpath

_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4096); print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


class _HangUp(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()
        self.factory.done.callback(CheckResult(CheckStatus.L4OK))  # type: ignore[attr-defined]


class _NoProtocol(ClientFactory):
    """Says the connect succeeded when asked for a protocol, and gives none: the connector
    closes the socket at once, without building a transport."""

    noisy = False

    def __init__(self) -> None:
        self.done: Deferred[CheckResult] = Deferred()

    def buildProtocol(self, addr: object) -> None:  # type: ignore[override]
        self.done.callback(CheckResult(CheckStatus.L4OK))

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.done.callback(classify_failure(reason))


class _Once(ClientFactory):
    protocol = _HangUp
    noisy = False

    def __init__(self) -> None:
        self.done: Deferred[CheckResult] = Deferred()

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.done.callback(classify_failure(reason))


Check = Callable[[int], Deferred[CheckResult]]


def _endpoint(port: int) -> Deferred[CheckResult]:
    endpoint = TCP4ClientEndpoint(_reactor, "127.0.0.1", port, 2.0)
    return Deferred.fromCoroutine(connect_check(endpoint, _reactor))  # type: ignore[arg-type]


def _factory_check(
    connect: Callable[[int, ClientFactory], object], kind: type[_Once | _NoProtocol] = _Once
) -> Check:
    def check(port: int) -> Deferred[CheckResult]:
        factory = kind()
        connect(port, factory)
        return factory.done

    return check


CHECKS: dict[str, Check] = {
    "endpoint": _endpoint,
    "connecttcp": _factory_check(
        lambda port, f: _reactor.connectTCP("127.0.0.1", port, f, timeout=2.0)  # type: ignore[attr-defined]
    ),
    "lean": _factory_check(
        lambda port, f: fastpath.connect(_reactor, "127.0.0.1", port, f, 2.0)  # type: ignore[arg-type]
    ),
    "lean-none": _factory_check(
        lambda port, f: fastpath.connect(_reactor, "127.0.0.1", port, f, 2.0),  # type: ignore[arg-type]
        _NoProtocol,
    ),
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _measure(check: Check, port: int, count: int, parallel: int) -> tuple[float, str]:
    gate = DeferredSemaphore(parallel)
    started = time.process_time()
    results = await gatherResults([gate.run(check, port) for _ in range(count)])
    cpu = time.process_time() - started
    return cpu / count * 1e6, results[0].status.value


async def _main(count: int, parallel: int) -> None:
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        open_port = int(server.stdout.readline())
        closed = _closed_port()
        print(f"{count} checks, {parallel} in flight; CPU us per check (this process)")
        for name, check in CHECKS.items():
            await _measure(check, open_port, parallel, parallel)  # warm up
            up, up_status = await _measure(check, open_port, count, parallel)
            down, down_status = await _measure(check, closed, count, parallel)
            print(f"{name:11} open {up:7.1f} ({up_status})  closed {down:7.1f} ({down_status})")
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--parallel", type=int, default=50)
    args = parser.parse_args()

    def run() -> None:
        done = Deferred.fromCoroutine(_main(args.checks, args.parallel))
        done.addErrback(lambda f: f.printTraceback())
        done.addBoth(lambda _: _reactor.stop())  # type: ignore[attr-defined]

    _reactor.callWhenRunning(run)  # type: ignore[attr-defined]
    _reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
