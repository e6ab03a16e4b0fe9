"""``twistd -n ddiscover-register`` as a real process against a real etcd, on v2 and on v3.

Keys appear at start, vanish at once on SIGTERM (deregistration), and vanish within TTL + 1 s
of a SIGKILL (the TTL or lease runs out).  The process is started here and signalled by PID.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import sys
import time
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet import defer, protocol, reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration.etcd import EtcdProcess
from tests.integration.support import eventually

ROOT = Path(__file__).resolve().parents[2]
TTL = 2
KEYS = {"/backends/web/r1": "127.0.0.1:9000", "/backends/web/port": "80"}

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class _Ended(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        self.ended.callback(None)


class RegistrarProcessMixin(_Base):
    """The registrar process against one API; subclasses set :attr:`api` and :meth:`keys`."""

    timeout = 30
    api: str

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)

    def keys(self) -> dict[str, str]:
        raise NotImplementedError

    async def start(self) -> _Ended:
        """Start the registrar and wait until both keys are in etcd."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        ended = _Ended()
        args = [
            str(Path(sys.executable).with_name("twistd")),
            "-n",
            "--pidfile=",
            "ddiscover-register",
            f"--etcd={self.etcd.url}",
            f"--etcd-api={self.api}",
            "--service=web",
            "--port=80",
            "--address=127.0.0.1:9000",
            "--id=r1",
            f"--ttl={TTL}",
        ]
        self.process = reactor.spawnProcess(ended, args[0], args, env=env, path=str(ROOT))

        def stop() -> defer.Deferred[None]:
            if self.process.pid is not None:
                self.process.signalProcess("KILL")
            return ended.ended

        self.addCleanup(stop)
        await eventually(lambda: self.keys() == KEYS)
        return ended

    async def test_sigterm_deregisters(self) -> None:
        """SIGTERM removes both keys before the process exits."""
        ended = await self.start()
        os.kill(self.process.pid, signal.SIGTERM)
        await ended.ended
        self.assertEqual(self.keys(), {}, ended.output.decode())

    async def test_sigkill_expires(self) -> None:
        """After SIGKILL the keys go within TTL + 1 s, not before the TTL has nearly run out."""
        ended = await self.start()
        os.kill(self.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        await ended.ended
        await eventually(lambda: self.keys() == {}, timeout=TTL + 1)
        self.assertGreater(time.monotonic() - killed, TTL - 1)


class V2RegistrarTests(RegistrarProcessMixin, TestCase):
    """The registrar with v2 TTL keys."""

    api = "v2"

    def keys(self) -> dict[str, str]:
        found = {}
        for key in KEYS:
            with contextlib.suppress(urllib.error.HTTPError):
                found[key] = self.etcd._request("GET", key)["node"]["value"]
        return found


class V3RegistrarTests(RegistrarProcessMixin, TestCase):
    """The registrar with a v3 lease."""

    api = "v3"

    def keys(self) -> dict[str, str]:
        reply = self.etcd.v3(
            "kv/range",
            {"key": base64.b64encode(b"/backends/").decode(), "range_end": "L2JhY2tlbmRzMA=="},
        )
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in reply.get("kvs", [])
        }
