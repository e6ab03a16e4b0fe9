"""The listener budget in a real process under a 1,024-descriptor limit.

One service whose ``port`` key lists 1,500 ports used to open listeners until descriptors
ran out, and then a good service got none of its connections through.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.integration.backends import ProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.processes import Ddiscover
from tests.integration.support import eventually, eventually_async, free_port, greeted_by, greeting

#: Ports the greedy service asks for: within what one port key may list (64), over what one
#: service may listen on under 1,024 descriptors (30).
GREEDY = range(30000, 30060)
#: A port key no service may have: rejected by the layout before any budget.
HUGE = range(30000, 31500)


class ListenerBudgetTests(TestCase):
    """``twistd ddiscover`` under ``prlimit --nofile=1024``, with real etcd and backends."""

    timeout = 90

    async def test_greedy_port_key_leaves_others_served(self) -> None:
        """The 60-port service gets its budget of 30 listeners, one error line, and the good
        service answers 10 connections of 10."""
        ddiscover = await self.serve_beside(GREEDY)
        self.assertEqual(ddiscover.output.count("over the budget of 30 listeners"), 1)
        self.assertEqual((await ddiscover.health())["listening"], 31)

    async def test_huge_port_key_rejected_alone(self) -> None:
        """A port key listing 1,500 ports (9 KB) is one rejection, and the good service
        answers 10 connections of 10."""
        ddiscover = await self.serve_beside(HUGE)
        line = "list 1500 ports, more than 64"
        await eventually(lambda: line in ddiscover.output)  # logged once it lasts a second
        self.assertEqual(ddiscover.output.count(line), 1)
        self.assertEqual((await ddiscover.health())["listening"], 1)

    async def serve_beside(self, greedy: range) -> Ddiscover:
        """ddiscover under nofile 1024 with service ``greedy`` on ``greedy`` and ``web``
        beside it, once ``web`` answers 10 connections of 10."""
        etcd = EtcdProcess.started(self)
        port = free_port()
        backend = ProcessBackend.started(self, "good")
        etcd.put("/backends/greedy/port", ",".join(map(str, greedy)))
        # Its backend's ports are closed ones (not our own listeners, which would loop).
        etcd.put("/backends/greedy/b1", "127.0.0.1:" + ",".join(str(p + 5000) for p in greedy))
        etcd.put("/backends/web/port", str(port))
        etcd.put("/backends/web/b1", backend.address)
        ddiscover = Ddiscover(self, etcd.url, "--check-interval", "2", "--rise", "1", nofile=1024)
        await ddiscover.serving()

        await eventually_async(lambda: greeted_by(port, "good"), timeout=30)
        answers = []
        for _ in range(10):
            try:
                answers.append(await greeting(port))
            except OSError as error:
                answers.append(type(error).__name__)
        print(f"\n    {len(greedy)}-port service, nofile 1024: good service answered {answers}")
        self.assertEqual(answers, ["good"] * 10)
        return ddiscover
