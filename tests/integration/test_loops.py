"""A backend registered at one of ddiscover's own listeners, in a real process."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.integration.backends import ProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.processes import Ddiscover
from tests.integration.support import eventually_async, free_port, greeted_by, greeting


class LoopTests(TestCase):
    """``twistd ddiscover`` with a looping backend next to a good one."""

    timeout = 60

    async def test_loop_refused_and_service_served(self) -> None:
        """The looping backend is refused with one line; every client reaches the good one
        (before, each connection looped through the proxy until maxconn)."""
        etcd = EtcdProcess.started(self)
        port = free_port()
        backend = ProcessBackend.started(self, "good")
        etcd.put("/backends/web/port", str(port))
        etcd.put("/backends/web/b1", backend.address)
        etcd.put("/backends/web/loop", f"127.0.0.1:{port}")
        ddiscover = Ddiscover(self, etcd.url, "--check-interval", "0.5", "--rise", "1")
        await ddiscover.serving()

        await eventually_async(lambda: greeted_by(port, "good"), timeout=20)
        answers = [await greeting(port) for _ in range(20)]
        self.assertEqual(answers, ["good"] * 20)
        self.assertEqual(ddiscover.output.count("refused as a loop"), 1)
        self.assertEqual((await ddiscover.health())["connections"], 0)
