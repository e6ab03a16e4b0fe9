"""Tests for :mod:`ddiscover.registrar.service` on a fake clock against the fake etcds."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import parse_qs

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from ddiscover.catalog import Address
from ddiscover.registrar.keys import Registration
from ddiscover.registrar.service import Registrar, RegistrarState
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
        kwargs.setdefault("jitter", lambda: 0.0)
        return Registrar(etcd, self.clock, WEB, api, **kwargs)  # type: ignore[arg-type]

    def logged(self, fragment: str) -> list[str]:
        """The formatted log lines that contain ``fragment``."""
        lines = (formatEvent(e) for e in self.logs)
        return [line for line in lines if fragment in line]

    def tracebacks(self) -> list[Failure]:
        """The failures logged with their traceback."""
        return [e["log_failure"] for e in self.logs if "log_failure" in e]


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
            self.etcd.requests[-1], "/v2/keys/backends/web/abc?refresh=true&prevExist=true"
        )
        self.assertEqual(self.etcd.index, index + 2)
        self.assertEqual(self.etcd._history[-1].index, index)  # refreshes make no event
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.etcd.values(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.logged("deregistered")), 1)

    def test_port_key_first(self) -> None:
        """The port key is written before the id key, on the first write and after expiry, so
        ddiscover never sees a backend of a service without a port."""
        self.service.startService()
        self.etcd.expire("/backends/web/port")
        self.etcd.expire("/backends/web/abc")
        self.clock.advance(5)
        self.assertEqual(
            [uri for uri in self.etcd.requests if "?" not in uri],
            ["/v2/keys/backends/web/port", "/v2/keys/backends/web/abc"] * 2,
        )
        self.successResultOf(self.service.stopService())

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

    def checked(self) -> tuple[FakeEtcdV3Resource, FakeEndpoints, Registrar]:
        """A started v3 registrar with a check on fake endpoints."""
        etcd = FakeEtcdV3Resource()
        endpoints = FakeEndpoints()
        service = self.registrar(etcd, "v3", check=CHECK, endpoint_for=endpoints)
        service.startService()
        return etcd, endpoints, service

    def test_follows_check(self) -> None:
        """Refused → not registered; accepted → registered; refused again → deregistered."""
        etcd, endpoints, service = self.checked()
        endpoints.last(CHECK).refuse()
        self.assertEqual(etcd.keys(), {})
        self.clock.advance(5)
        transport = endpoints.last(CHECK).succeed()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(etcd.keys()), 2)
        self.clock.advance(5)
        endpoints.last(CHECK).time_out()
        self.assertEqual(etcd.keys(), {})
        self.assertEqual(
            self.logged("does not accept connections"),
            [
                "127.0.0.1:8080 does not accept connections (Connection refused); "
                "not registering /backends/web/abc",
                "127.0.0.1:8080 does not accept connections (Layer4 timeout); "
                "deregistered /backends/web/abc",
            ],
        )
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

    def test_check_not_resolved(self) -> None:
        """A --check name that does not resolve counts as unhealthy; the loop goes on."""
        etcd, endpoints, service = self.checked()
        endpoints.last(CHECK).not_resolved()
        self.assertEqual((etcd.keys(), service.state), ({}, RegistrarState.WAITING))
        self.assertEqual(len(self.logged("does not accept connections")), 1)
        self.clock.advance(5)
        endpoints.last(CHECK).not_resolved()
        self.assertEqual(len(self.logged("does not accept connections")), 1)  # said once
        self.clock.advance(5)
        endpoints.last(CHECK).succeed()
        self.assertEqual(len(etcd.keys()), 2)
        self.assertEqual(self.tracebacks(), [])
        self.successResultOf(service.stopService())

    def test_endpoint_factory_raises(self) -> None:
        """An endpoint that cannot even be built (a bad name, say) is a failed check."""

        def endpoint_for(address: Address, timeout: float) -> IStreamClientEndpoint:
            raise DNSLookupError(address.host)

        etcd = FakeEtcdV3Resource()
        service = self.registrar(etcd, "v3", check=CHECK, endpoint_for=endpoint_for)
        service.startService()
        self.assertEqual(
            self.logged("does not accept connections"),
            [
                "127.0.0.1:8080 does not accept connections (DNS lookup failed: 127.0.0.1.); "
                "not registering /backends/web/abc"
            ],
        )
        self.assertEqual(service.state, RegistrarState.WAITING)
        self.successResultOf(service.stopService())


class SupervisionTests(RegistrarTestCase):
    """No failure of any kind ends the loop: it is logged once, backed off and retried."""

    def test_states(self) -> None:
        """The state is the step being awaited, and STOPPED only when nothing runs."""
        endpoints = FakeEndpoints()
        service = self.registrar(FakeEtcdV3Resource(), "v3", check=CHECK, endpoint_for=endpoints)
        self.assertEqual(service.state, RegistrarState.STOPPED)
        service.startService()
        self.assertEqual(service.state, RegistrarState.CHECKING)
        endpoints.last(CHECK).succeed()
        self.assertEqual(service.state, RegistrarState.WAITING)
        self.successResultOf(service.stopService())
        self.assertEqual(service.state, RegistrarState.STOPPED)

    def test_hostile_reply_backs_off_and_registers_again(self) -> None:
        """A reply shaped as etcd never sends (a lease ID that is no number) is one line, not a
        crash: backed off 1, 2, 4 s, then registered."""
        etcd = FakeEtcdV3Resource()
        etcd.fail_next(200, b'{"ID": "not a number"}', times=3)
        service = self.registrar(etcd, "v3")
        service.startService()
        self.assertEqual(service.state, RegistrarState.BACKING_OFF)
        self.assertEqual(
            self.logged("trying again"),
            [
                "etcd http://etcd.test:2379: lease/grant returned no lease ID, "
                "got 'not a number'; trying again in 1s"
            ],
        )
        grants = []
        for delay in (1, 2, 4):
            self.clock.advance(delay - 0.01)
            grants.append(len([r for r in etcd.requests if r[0] == "/v3/lease/grant"]))
            self.clock.advance(0.01)
        self.assertEqual(grants, [1, 2, 3])
        self.assertEqual(self.tracebacks(), [])
        self.assertTrue(service.registered)
        self.assertEqual(len(etcd.keys()), 2)
        self.assertEqual((service.state, service.failures), (RegistrarState.WAITING, 0))
        self.successResultOf(service.stopService())

    def test_keepalive_without_a_number(self) -> None:
        """A keepalive whose TTL is no number counts as a lost lease: registered again."""
        etcd = FakeEtcdV3Resource()
        service = self.registrar(etcd, "v3")
        service.startService()
        [lease] = etcd.leases
        etcd.fail_next(200, b'{"result": {"TTL": "soon"}}')
        self.clock.advance(5)
        self.assertTrue(service.registered)
        self.assertNotIn(lease, [etcd.lease_of(k) for k in list(etcd.keys())])
        self.assertEqual(self.tracebacks(), [])
        self.successResultOf(service.stopService())

    def test_backoff_capped_at_interval(self) -> None:
        """An etcd down for long is retried at least every ttl/3, so keys come back at once."""
        etcd = WritableEtcdV2()
        etcd.fail_next(503, b"", times=10)
        service = self.registrar(etcd, "v2")
        service.startService()
        for _ in range(9):
            self.clock.advance(5)
        self.assertEqual(service.failures, 10)
        self.assertEqual(self.logged("trying again")[-1][-len("in 5s") :], "in 5s")
        self.clock.advance(5)
        self.assertTrue(service.registered)
        self.assertEqual(self.tracebacks(), [])
        self.successResultOf(service.stopService())

    def test_bug_registers_again(self) -> None:
        """A failure that is not etcd's is logged with its traceback once (the same one again
        in one line), and the next attempt writes every key again rather than refreshing."""
        calls: list[str] = []

        class BrokenOnce:
            def __init__(self, etcd: object, registration: Registration) -> None:
                pass

            async def register(self) -> None:
                calls.append("register")

            async def refresh(self) -> None:
                calls.append("refresh")
                if calls.count("refresh") <= 2:
                    raise KeyError("a bug")

            async def deregister(self) -> None:
                calls.append("deregister")

        service = self.registrar(FakeEtcdV3Resource(), "v3", keepers={"v3": BrokenOnce})
        service.startService()
        self.clock.advance(5)
        self.assertEqual((service.registered, service.state), (False, RegistrarState.BACKING_OFF))
        [failure] = self.tracebacks()
        self.assertIsInstance(failure.value, KeyError)
        self.assertEqual(
            self.logged("failed on a bug"),
            ["registering /backends/web/abc failed on a bug; registering again in 1s"],
        )
        self.clock.advance(1)
        self.clock.advance(5)  # the same bug again: one line, no second traceback
        self.assertEqual(len(self.tracebacks()), 1)
        self.assertEqual(
            self.logged("failed again"),
            [
                "registering /backends/web/abc failed again (KeyError: 'a bug'); "
                "registering again in 1s"
            ],
        )
        self.clock.advance(1)
        self.clock.advance(5)
        self.assertEqual(calls, ["register", "refresh"] * 3)  # the third refresh works
        self.assertTrue(service.registered)
        self.successResultOf(service.stopService())
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_loop_restarted(self) -> None:
        """Should the loop itself end on a bug, it is logged and started again."""
        etcd = FakeEtcdV3Resource()
        jitters = iter([ZeroDivisionError, 0.0, 0.0, 0.0])

        def jitter() -> float:
            value = next(jitters)
            if value is ZeroDivisionError:
                raise ZeroDivisionError("jitter")
            return 0.0

        etcd.fail_next(503, b"{}")
        service = self.registrar(etcd, "v3", jitter=jitter)
        service.startService()
        self.assertEqual(service.state, RegistrarState.BACKING_OFF)
        self.assertEqual(
            self.logged("loop ended on a bug"),
            ["the registrar loop ended on a bug; starting it again in 2s"],
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(2)
        self.assertTrue(service.registered)
        self.successResultOf(service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_backing_off(self) -> None:
        """Stopping during a backoff cancels the retry and leaves no timer behind."""
        etcd = WritableEtcdV2()
        etcd.fail_next(503, b"", times=1)
        service = self.registrar(etcd, "v2")
        service.startService()
        self.assertEqual(service.state, RegistrarState.BACKING_OFF)
        self.successResultOf(service.stopService())
        self.assertEqual(
            (service.state, self.clock.getDelayedCalls()), (RegistrarState.STOPPED, [])
        )
