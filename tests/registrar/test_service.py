"""Tests for :mod:`ddiscover.registrar.service` on a fake clock against the fake etcds."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import parse_qs

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from ddiscover.catalog import Address
from ddiscover.registrar.service import Registrar, Registration
from ddiscover.registry.client import EtcdHTTP
from tests.fake_endpoints import FakeEndpoints
from tests.fake_etcd import FakeEtcdV2Resource
from tests.fake_etcd3 import FakeEtcdV3Resource

ENDPOINT = URL.from_text("http://etcd.test:2379")
WEB = Registration("/backends", "web", "abc", Address("10.0.0.5", 8080), 80, 15)
CHECK = Address("127.0.0.1", 8080)


class WritableEtcdV2(FakeEtcdV2Resource):
    """The fake v2 etcd with the writes a registrar makes: set, refresh and delete."""

    def render_PUT(self, request: Request) -> bytes:  # noqa: N802 (twisted.web's name)
        if self._canned:
            return cast(bytes, self._canned.popleft()(request))
        key = request.path.decode()[len("/v2/keys") :]
        body = cast(Any, request).content.read().decode()
        form = {
            k: v[0]
            for k, v in parse_qs(request.uri.decode().partition("?")[2] + "&" + body).items()
        }
        self.requests.append(request.uri.decode())
        if form.get("refresh") == "true":
            if key not in self._keys:
                request.setResponseCode(404)
                return json.dumps({"errorCode": 100, "message": "Key not found"}).encode()
            value, _, _ = self._keys[key]
            self._keys[key] = (value, self.index + 1, int(form["ttl"]))
            self.index += 1
            return b"{}"
        self.set(key, form["value"], ttl=int(form["ttl"]))
        request.setResponseCode(201)
        return b"{}"

    def render_DELETE(self, request: Request) -> bytes:  # noqa: N802 (twisted.web's name)
        key = request.path.decode()[len("/v2/keys") :]
        self.requests.append(request.uri.decode())
        if key not in self._keys:
            request.setResponseCode(404)
            return json.dumps({"errorCode": 100, "message": "Key not found"}).encode()
        self.delete(key)
        return b"{}"

    def values(self) -> dict[str, tuple[str, int | None]]:
        """Each key's value and TTL."""
        return {k: (v, ttl) for k, (v, _, ttl) in self._keys.items()}


class RegistrarTestCase(SynchronousTestCase):
    """A registrar on a fake clock."""

    def registrar(self, resource: object, api: str, **kwargs: object) -> Registrar:
        self.clock = Clock()
        self.stub = StubTreq(resource)
        etcd = EtcdHTTP(self.stub, self.clock, [ENDPOINT], request_timeout=5.0)  # type: ignore[arg-type]
        self.logs = self.enterContext(capturedLogs())
        return Registrar(etcd, self.clock, WEB, api, **kwargs)  # type: ignore[arg-type]

    def logged(self, fragment: str) -> list[str]:
        return [e["log_format"] for e in self.logs if fragment in e.get("log_format", "")]


class V2Tests(RegistrarTestCase):
    """v2: TTL keys, refreshed without events, deleted on stop."""

    def setUp(self) -> None:
        self.etcd = WritableEtcdV2()
        self.service = self.registrar(self.etcd, "v2")

    def test_lifecycle(self) -> None:
        """Register at once, refresh every ttl/3 without an event, delete on stop."""
        self.service.startService()
        self.assertEqual(
            self.etcd.values(),
            {"/backends/web/abc": ("10.0.0.5:8080", 15), "/backends/web/port": ("80", 15)},
        )
        index = self.etcd.index
        self.clock.advance(5)
        self.assertEqual(
            self.etcd.requests[-1], "/v2/keys/backends/web/port?refresh=true&prevExist=true"
        )
        self.assertEqual(self.etcd.index, index + 2)
        self.assertEqual(self.etcd._history[-1].index, index)  # refreshes make no event
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.etcd.values(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.logged("deregistered")), 1)

    def test_expired_meanwhile(self) -> None:
        """A key that expired (etcd unreachable too long) is written again."""
        self.service.startService()
        self.etcd.expire("/backends/web/abc")
        self.clock.advance(5)
        self.assertIn("/backends/web/abc", self.etcd.values())
        self.successResultOf(self.service.stopService())

    def test_etcd_down(self) -> None:
        """A failing etcd is logged and retried next cycle; nothing crashes."""
        self.etcd.fail_next(503, b"", times=1)
        self.service.startService()
        self.assertFalse(self.service.registered)
        self.assertEqual(len(self.logged("trying again")), 1)
        self.clock.advance(5)
        self.assertTrue(self.service.registered)
        self.successResultOf(self.service.stopService())


class V3Tests(RegistrarTestCase):
    """v3: both keys on one lease, kept alive, revoked on stop."""

    def setUp(self) -> None:
        self.etcd = FakeEtcdV3Resource()
        self.service = self.registrar(self.etcd, "v3")

    def test_lifecycle(self) -> None:
        """Grant + txn at once, keepalive every ttl/3, revoke on stop removes both keys."""
        self.service.startService()
        self.assertEqual(
            self.etcd.keys(), {"/backends/web/abc": "10.0.0.5:8080", "/backends/web/port": "80"}
        )
        [lease] = self.etcd.leases
        self.assertEqual(self.etcd.lease_of("/backends/web/port"), lease)
        self.clock.advance(5)
        self.assertEqual(self.etcd.requests[-1], ("/v3/lease/keepalive", {"ID": str(lease)}))
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.etcd.keys(), {})
        self.assertEqual(self.etcd.leases, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lease_gone(self) -> None:
        """A keepalive without a TTL means the lease is gone: grant a new one and put again."""
        self.service.startService()
        [lease] = self.etcd.leases
        self.etcd.expire(lease)
        self.clock.advance(5)
        [new] = self.etcd.leases
        self.assertNotEqual(new, lease)
        self.assertEqual(self.etcd.lease_of("/backends/web/abc"), new)
        self.assertEqual(len(self.logged("is gone")), 1)
        self.successResultOf(self.service.stopService())

    def test_auto(self) -> None:
        """With auto, a server without /v2/keys gets the v3 keeper."""
        service = self.registrar(self.etcd, "auto")
        service.startService()
        self.assertEqual(len(self.etcd.leases), 1)
        self.successResultOf(service.stopService())


class CheckTests(RegistrarTestCase):
    """--check: registered only while the local service accepts connections."""

    def test_follows_check(self) -> None:
        """Refused → not registered; accepted → registered; refused again → deregistered."""
        etcd = FakeEtcdV3Resource()
        endpoints = FakeEndpoints()
        service = self.registrar(etcd, "v3", check=CHECK, endpoint_for=endpoints)
        service.startService()
        endpoints.last(CHECK).refuse()
        self.assertEqual(etcd.keys(), {})
        self.clock.advance(5)
        transport = endpoints.last(CHECK).succeed()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(etcd.keys()), 2)
        self.clock.advance(5)
        endpoints.last(CHECK).time_out()
        self.assertEqual(etcd.keys(), {})
        self.assertEqual(len(self.logged("refuses connections")), 1)
        self.assertEqual(endpoints.last(CHECK).timeout, 5.0)
        self.successResultOf(service.stopService())

    def test_stop_while_checking(self) -> None:
        """Stopping during a check cancels the connect attempt."""
        endpoints = FakeEndpoints()
        service = self.registrar(FakeEtcdV3Resource(), "v3", check=CHECK, endpoint_for=endpoints)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertTrue(endpoints.last(CHECK).cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])
