"""``twistd -n ddiscover-register`` as a real process against a real etcd, on v2 and on v3.

Keys appear at start, vanish at once on SIGTERM (deregistration), and vanish within TTL + 1 s
of a SIGKILL (the TTL or lease runs out).  The process is started here and signalled by PID.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import sys
import time
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.trial.unittest import TestCase

from tests.integration.etcd import EtcdProcess
from tests.integration.processes import Child
from tests.integration.support import environment, eventually

TTL = 2
KEYS = {"/backends/web/r1": "127.0.0.1:9000", "/backends/web/port": "80"}

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class RegistrarProcessMixin(_Base):
    """The registrar process against one API; subclasses set :attr:`api` and :meth:`keys`."""

    timeout = 30
    api: str

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)

    def keys(self) -> dict[str, str]:
        raise NotImplementedError

    async def start(self) -> Child:
        """Start the registrar and wait until both keys are in etcd."""
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
        registrar = Child(self, args, environment())
        await eventually(lambda: self.keys() == KEYS)
        return registrar

    async def test_sigterm_deregisters(self) -> None:
        """SIGTERM removes both keys before the process exits; no Twisted chatter is logged."""
        registrar = await self.start()
        registrar.signal(signal.SIGTERM)
        await registrar.ended()
        self.assertEqual(self.keys(), {}, registrar.output)
        # At info, Twisted's line per etcd connection is debug (--log-level governs it).
        for chatter in ("Starting factory", "Stopping factory"):
            self.assertNotIn(chatter, registrar.output)
        self.assertIn("deregistered /backends/web/r1", registrar.output)

    async def test_sigkill_expires(self) -> None:
        """After SIGKILL the keys go within TTL + 1 s, not before the TTL has nearly run out."""
        registrar = await self.start()
        registrar.signal(signal.SIGKILL)
        killed = time.monotonic()
        await registrar.ended()
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
