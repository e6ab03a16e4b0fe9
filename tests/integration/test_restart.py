"""Restarting ddiscover under load: no accepted client is closed for want of a first check.

Run it with ``-s`` to see the counts: client loops keep connecting through the proxy while
one ddiscover is stopped and another started on the same ports; every connection the new
one accepts must reach the backend, however early it came (before its first check passed).
"""

from __future__ import annotations

import signal
from collections import Counter
from typing import cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.backends import ProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.processes import Ddiscover
from tests.integration.support import eventually, free_port, greeting

#: Client loops running at once, each one connection at a time.
LOOPS = 4


class RestartTests(TestCase):
    """A client loop through a ddiscover that is stopped and started again."""

    timeout = 120

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        self.port = free_port()
        self.backend = ProcessBackend.started(self, "real")
        self.etcd.put("/backends/web/port", str(self.port))
        self.etcd.put("/backends/web/r1", self.backend.address)
        self.outcomes: Counter[str] = Counter()
        self.running = True

    def ddiscover(self) -> Ddiscover:
        # Checks every 2 s: the first one comes some time after the listener opens.
        return Ddiscover(self, self.etcd.url, "--check-interval", "2", "--drain-timeout", "1")

    async def loop(self) -> None:
        """Connect, read the greeting, count how it went; until told to stop."""
        while self.running:
            try:
                name = await greeting(self.port)
            except ConnectionRefusedError:
                name = "refused"
                # Not listening yet: no need to spin.
                await deferLater(cast(IReactorTime, reactor), 0.005, lambda: None)
            except OSError as error:
                name = type(error).__name__
            self.outcomes["closed unforwarded" if name == "" else name] += 1

    async def test_restart_closes_no_accepted_client(self) -> None:
        """Across a restart, every connection ddiscover accepts reaches the backend."""
        loops = gatherResults([Deferred.fromCoroutine(self.loop()) for _ in range(LOOPS)])
        first = self.ddiscover()
        await eventually(lambda: self.outcomes["real"] >= 50, timeout=30)
        first.signal(signal.SIGTERM)
        await first.ended()
        before = self.outcomes["real"]
        second = self.ddiscover()
        await eventually(lambda: self.outcomes["real"] >= before + 200, timeout=30)
        self.running = False
        await loops
        await second.kill()
        print(f"\n    restart under load: {dict(self.outcomes)}")
        self.assertEqual(self.outcomes["closed unforwarded"], 0, dict(self.outcomes))
        # Resets are the kernel's, for clients still in the accept queue of the listener the
        # first ddiscover closes; refusals come before the second one listens.
        self.assertEqual(
            set(self.outcomes) - {"real", "refused", "ConnectionResetError"},
            set(),
            dict(self.outcomes),
        )
