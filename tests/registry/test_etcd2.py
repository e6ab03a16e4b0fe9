"""Tests for :mod:`ddiscover.registry.etcd2` against the fake etcd, on a fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ddiscover.registry.client import EtcdHTTP
from ddiscover.registry.etcd2 import (
    Change,
    EtcdV2Client,
    HTTPClientLike,
    IndexCleared,
    RegistryError,
    RegistryUnavailable,
    Snapshot,
    parse_event,
)
from ddiscover.registry.layout import Entry
from tests.fake_etcd import FakeEtcdV2Resource

T = TypeVar("T")

FIRST = URL.from_text("http://etcd-a.test:2379")
SECOND = URL.from_text("http://etcd-b.test:2379")


def run(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Start a client call the way the watcher does, as a cancellable Deferred."""
    return Deferred.fromCoroutine(coroutine)


def v2_client(
    stub: StubTreq,
    clock: Clock,
    *endpoints: URL,
    max_body: int = 1024 * 1024,
    prefix: str = "/backends",
) -> EtcdV2Client:
    """A v2 client of the fake etcd behind ``stub`` on ``endpoints`` (default: just FIRST)."""
    http: HTTPClientLike = stub  # type: ignore[assignment]
    etcd = EtcdHTTP(http, clock, endpoints or (FIRST,), request_timeout=5.0, max_body=max_body)
    return EtcdV2Client(etcd, prefix, watch_timeout=60.0)


class ClientTestCase(SynchronousTestCase):
    """A client on a fake clock talking to a fake etcd through ``StubTreq``."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcdV2Resource()
        self.stub = StubTreq(self.etcd)
        self.client = self.make_client()

    def make_client(
        self, *endpoints: URL, max_body: int = 1024 * 1024, prefix: str = "/backends"
    ) -> EtcdV2Client:
        """A client of the fake etcd on ``endpoints`` (default: just FIRST)."""
        return v2_client(self.stub, self.clock, *endpoints, max_body=max_body, prefix=prefix)

    def assert_clean(self) -> None:
        """No timer is left on the clock and no wait is held open."""
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.etcd.waiting, 0)


class SnapshotTests(ClientTestCase):
    """``snapshot()`` lists every key under the prefix."""

    def test_listing(self) -> None:
        """Leaves at any depth become entries with their index and TTL; dirs are walked."""
        self.etcd.set("/backends/web/port", "80", ttl=15)
        self.etcd.set("/backends/jwilder/whoami/abc", "10.0.0.1:8000")
        self.etcd.mkdir("/backends/empty")
        self.etcd.set("/other/x", "y")
        snapshot = self.successResultOf(run(self.client.snapshot()))
        self.assertEqual(
            snapshot,
            Snapshot(
                index=7,
                entries={
                    "/backends/web/port": Entry("80", 4, ttl=15),
                    "/backends/jwilder/whoami/abc": Entry("10.0.0.1:8000", 5),
                },
            ),
        )
        self.assertEqual(self.etcd.requests, ["/v2/keys/backends?recursive=true"])
        self.assert_clean()

    def test_absent_prefix(self) -> None:
        """A prefix etcd does not have (404 errorCode 100) is an empty listing, not an error."""
        self.etcd.set("/other/x", "y")
        snapshot = self.successResultOf(run(self.client.snapshot()))
        self.assertEqual(snapshot, Snapshot(index=4, entries={}))

    def test_empty_dir(self) -> None:
        """An empty prefix directory is an empty listing."""
        self.etcd.mkdir("/backends")
        snapshot = self.successResultOf(run(self.client.snapshot()))
        self.assertEqual(snapshot, Snapshot(index=4, entries={}))

    def test_root_prefix(self) -> None:
        """The root directory, which etcd lists without a key, can be the prefix."""
        self.etcd.set("/web/port", "80")
        client = self.make_client(prefix="/")
        snapshot = self.successResultOf(run(client.snapshot()))
        self.assertEqual(snapshot.entries, {"/web/port": Entry("80", 4)})
        self.assertEqual(self.etcd.requests, ["/v2/keys?recursive=true"])

    def test_errors(self) -> None:
        """Each kind of bad answer is a one-line RegistryError naming the endpoint."""
        cases: list[tuple[int, bytes, type[RegistryError], str]] = [
            (
                500,
                b'{"errorCode":300,"message":"Raft Internal Error","cause":"x","index":3}',
                RegistryUnavailable,
                "HTTP 500 errorCode 300: Raft Internal Error (x)",
            ),
            (200, b"{not json", RegistryUnavailable, "bad listing: not JSON"),
            (200, b'{"action":"get"}', RegistryUnavailable, "bad listing: no 'node' object"),
            (
                200,
                b'{"action":"get","node":{"key":"/backends/a","modifiedIndex":4}}',
                RegistryUnavailable,
                "bad listing: field 'value' is missing or not str",
            ),
            (
                401,
                b'{"errorCode":110,"message":"The request requires user authentication",'
                b'"cause":"Insufficient credentials","index":0}',
                RegistryError,
                "HTTP 401 errorCode 110: The request requires user authentication "
                "(Insufficient credentials)",
            ),
            (404, b"404 page not found\n", RegistryError, "HTTP 404: 404 page not found"),
        ]
        for code, body, kind, problem in cases:
            with self.subTest(code=code, body=body):
                self.etcd.fail_next(code, body)
                error = self.failureResultOf(run(self.client.snapshot()), RegistryError).value
                self.assertIs(type(error), kind)
                self.assertEqual(error.problem[: len(problem)], problem)
                self.assertEqual(error.endpoint, FIRST)
                self.assertTrue(str(error).startswith("etcd http://etcd-a.test:2379: "))
                self.assertNotIn("\n", str(error))

    def test_no_index_header(self) -> None:
        """A listing without X-Etcd-Index cannot be watched from, so it is refused."""
        self.etcd.fail_next(200, b'{"action":"get","node":{"dir":true}}', etcd_headers=False)
        failure = self.failureResultOf(run(self.client.snapshot()), RegistryUnavailable)
        self.assertEqual(failure.value.problem, "no X-Etcd-Index header")

    def test_headers_timeout(self) -> None:
        """An etcd that never answers is unavailable after request_timeout, leaving no timer."""
        self.etcd.hang_next()
        d = run(self.client.snapshot())
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, RegistryUnavailable)
        self.assertEqual(failure.value.problem, "no response within 5s")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_body_timeout(self) -> None:
        """A listing whose body stalls after the headers is aborted after request_timeout."""
        self.etcd.stall_next()
        d = run(self.client.snapshot())
        self.clock.advance(5)
        failure = self.failureResultOf(d, RegistryUnavailable)
        self.assertEqual(failure.value.problem, "listing not received within 5s")
        self.stub.flush()
        self.assertEqual(self.etcd.aborted, 1)
        self.assert_clean()

    def test_connection_dropped(self) -> None:
        """A connection closed before any response is unavailability."""
        self.etcd.drop_next()
        d = run(self.client.snapshot())
        self.stub.flush()
        failure = self.failureResultOf(d, RegistryUnavailable)
        self.assertIn("ResponseNeverReceived", failure.value.problem)

    def test_body_too_large(self) -> None:
        """A listing over max_body is aborted and reported, not buffered."""
        client = self.make_client(max_body=300)
        for n in range(20):
            self.etcd.set(f"/backends/web/b{n}", f"10.0.0.{n}:80")
        failure = self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.assertEqual(failure.value.problem, "response body is over 300 bytes")
        self.assert_clean()

    def test_cancel(self) -> None:
        """Cancelling a snapshot that waits for headers raises CancelledError, leaving no timer."""
        self.etcd.hang_next()
        d = run(self.client.snapshot())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.client.endpoint, FIRST)


class FailoverTests(ClientTestCase):
    """The client sticks to a working endpoint and moves on from one that fails."""

    def test_rotates_on_unavailable(self) -> None:
        """A 502 from the first endpoint makes the next call go to the second."""
        client = self.make_client(FIRST, SECOND)
        self.etcd.down_hosts.add("etcd-a.test")
        failure = self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.assertEqual(failure.value.endpoint, FIRST)
        self.assertEqual(client.endpoint, SECOND)
        self.successResultOf(run(client.snapshot()))
        self.successResultOf(run(client.snapshot()))
        self.assertEqual(client.endpoint, SECOND)

    def test_wraps_around(self) -> None:
        """After the last endpoint fails, the first one is tried again."""
        client = self.make_client(FIRST, SECOND)
        self.etcd.fail_next(503, b"", times=2)
        self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.assertEqual(client.endpoint, FIRST)

    def test_client_errors_do_not_rotate(self) -> None:
        """A 4xx is the same on every member, so the endpoint stays."""
        client = self.make_client(FIRST, SECOND)
        self.etcd.fail_next(401, b'{"errorCode":110,"message":"Insufficient credentials"}')
        self.failureResultOf(run(client.snapshot()), RegistryError)
        self.assertEqual(client.endpoint, FIRST)


class WaitTests(ClientTestCase):
    """``wait(index)`` long-polls for one change under the prefix."""

    def test_held_until_a_write(self) -> None:
        """The wait is held open until a key under the prefix changes, then reports it."""
        d = run(self.client.wait(4))
        self.assertEqual(
            self.etcd.requests, ["/v2/keys/backends?wait=true&recursive=true&waitIndex=4"]
        )
        self.assertNoResult(d)
        self.etcd.set("/other/x", "y")
        self.stub.flush()
        self.assertNoResult(d)
        self.etcd.set("/backends/web/abc", "10.0.0.1:8080", ttl=15)
        self.stub.flush()
        self.assertEqual(
            self.successResultOf(d),
            Change("set", "/backends/web/abc", False, Entry("10.0.0.1:8080", 5, 15), 5),
        )
        self.assert_clean()

    def test_from_history(self) -> None:
        """An index already in the history is answered at once with the first event from it."""
        self.etcd.set("/backends/web/a", "10.0.0.1:80")
        self.etcd.delete("/backends/web/a")
        change = self.successResultOf(run(self.client.wait(5)))
        self.assertEqual(change, Change("delete", "/backends/web/a", False, None, 5))
        self.assertTrue(change is not None and change.removes)

    def test_directory_delete(self) -> None:
        """Deleting a directory is one event for the directory."""
        self.etcd.set("/backends/web/a", "10.0.0.1:80")
        index = self.etcd.delete("/backends/web")
        change = self.successResultOf(run(self.client.wait(index)))
        self.assertEqual(change, Change("delete", "/backends/web", True, None, index))

    def test_index_cleared(self) -> None:
        """A wait older than the event history fails with IndexCleared (errorCode 401)."""
        for n in range(1001):
            self.etcd.set("/other/spam", str(n))
        failure = self.failureResultOf(run(self.client.wait(4)), IndexCleared)
        self.assertIn("HTTP 400 errorCode 401", failure.value.problem)
        self.assertEqual(self.client.endpoint, FIRST)

    def test_body_timeout(self) -> None:
        """A wait with no event within watch_timeout returns None and closes its connection."""
        d = run(self.client.wait(4))
        self.clock.advance(59)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d))
        self.stub.flush()
        self.assertEqual(self.etcd.aborted, 1)
        self.assert_clean()

    def test_quiet_prefix_on_busy_cluster(self) -> None:
        """Waits that time out advance to X-Etcd-Index: no re-list however busy the cluster.

        Each round, 600 writes outside the prefix come during the wait: after two rounds the
        old index has left etcd's 1,000-event history, and waiting from it again would be
        errorCode 401 and a full re-list.  (X-Etcd-Index is the index the wait was registered
        at, so over 1,000 writes within one wait still clear it: nothing in the v2 API says
        more.)
        """
        self.etcd.set("/backends/web/port", "80")
        start = self.successResultOf(run(self.client.snapshot())).index + 1
        reported: list[int] = []
        for _ in range(5):
            before = self.etcd.index
            d = run(self.client.watch(start, lambda changes, index: reported.append(index)))
            for n in range(600):
                self.etcd.set(f"/other/k{n % 10}", str(n))
            self.clock.advance(60)
            self.assertIsNone(self.successResultOf(d))
            if before >= start:  # the first wait starts at the listing's index: nothing new
                self.assertEqual(reported.pop(), before)
                start = before + 1
            self.assertEqual(reported, [])
        self.etcd.set("/backends/web/a", "10.0.0.1:80")
        changes: list[Change] = []
        d = run(self.client.watch(start, lambda batch, index: changes.extend(batch)))
        self.successResultOf(d)
        self.assertEqual([c.key for c in changes], ["/backends/web/a"])
        listings = [r for r in self.etcd.requests if "wait=true" not in r]
        self.assertEqual(len(listings), 1)
        self.assert_clean()

    def test_quiet_wait_reports_nothing_new(self) -> None:
        """A wait that ends quiet at the index it started from reports nothing."""
        reported: list[int] = []
        d = run(self.client.watch(4, lambda changes, index: reported.append(index)))
        self.etcd.end_waits_empty()
        self.stub.flush()
        self.successResultOf(d)
        self.assertEqual(reported, [])

    def test_index_went_back(self) -> None:
        """An X-Etcd-Index below one already seen (etcd restored) forces a resync."""
        for n in range(20):
            self.etcd.set("/other/x", str(n))
        self.etcd.wipe()
        d = run(self.client.watch(20, lambda changes, index: None))
        failure = self.failureResultOf(d, IndexCleared)
        self.assertIn("the etcd index went back to 3 from at least 19", failure.value.problem)
        self.assert_clean()

    def test_empty_body(self) -> None:
        """A wait etcd ends with an empty body returns None."""
        d = run(self.client.wait(4))
        self.etcd.end_waits_empty()
        self.stub.flush()
        self.assertIsNone(self.successResultOf(d))
        self.assert_clean()

    def test_cut_off(self) -> None:
        """A wait whose connection drops mid-body (etcd killed) is unavailability."""
        d = run(self.client.wait(4))
        self.etcd.cut_waits()
        self.stub.flush()
        failure = self.failureResultOf(d, RegistryUnavailable)
        self.assertTrue(failure.value.problem.startswith("response cut off: "))
        self.assert_clean()

    def test_cancel(self) -> None:
        """Cancelling a held wait aborts its connection and leaves no timer behind."""
        d = run(self.client.wait(4))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()
        self.assertEqual(self.etcd.aborted, 1)
        self.assert_clean()

    def test_garbage(self) -> None:
        """An event that is not etcd's JSON is unavailability, not a crash."""
        for body, problem in [
            (b"<html>", "bad event: not JSON"),
            (b"[]", "bad event: not a JSON object"),
            (b'{"action":"get","node":{"key":"/a","modifiedIndex":1}}', "bad event: unknown"),
            (b'{"action":"set","node":{"key":"/a","value":"x"}}', "bad event: field"),
        ]:
            with self.subTest(body=body):
                self.etcd.fail_next(200, body)
                failure = self.failureResultOf(run(self.client.wait(4)), RegistryUnavailable)
                self.assertTrue(failure.value.problem.startswith(problem))


class ParseEventTests(SynchronousTestCase):
    """``parse_event`` reads each action etcd v2 reports (docs/etcd-http.md §2.5)."""

    def test_actions(self) -> None:
        """Set-like actions carry the new entry; removals and directories do not."""
        for event, change in [
            (
                {
                    "action": "set",
                    "node": {
                        "key": "/b/w/a",
                        "value": "C",
                        "ttl": 15,
                        "modifiedIndex": 19,
                        "createdIndex": 19,
                    },
                },
                Change("set", "/b/w/a", False, Entry("C", 19, 15), 19),
            ),
            (
                {"action": "create", "node": {"key": "/b/w/d", "value": "x", "modifiedIndex": 11}},
                Change("create", "/b/w/d", False, Entry("x", 11), 11),
            ),
            (
                {"action": "update", "node": {"key": "/b/w/d", "value": "y", "modifiedIndex": 12}},
                Change("update", "/b/w/d", False, Entry("y", 12), 12),
            ),
            (
                {
                    "action": "compareAndSwap",
                    "node": {"key": "/b/w/d", "value": "z", "modifiedIndex": 13},
                },
                Change("compareAndSwap", "/b/w/d", False, Entry("z", 13), 13),
            ),
            (
                {"action": "compareAndDelete", "node": {"key": "/b/w/d", "modifiedIndex": 14}},
                Change("compareAndDelete", "/b/w/d", False, None, 14),
            ),
            (
                {
                    "action": "expire",
                    "node": {"key": "/b/w/a", "modifiedIndex": 7},
                    "prevNode": {"key": "/b/w/a", "value": "old"},
                },
                Change("expire", "/b/w/a", False, None, 7),
            ),
            (
                {"action": "delete", "node": {"key": "/b/w", "dir": True, "modifiedIndex": 16}},
                Change("delete", "/b/w", True, None, 16),
            ),
            (
                {"action": "set", "node": {"key": "/b/new", "dir": True, "modifiedIndex": 17}},
                Change("set", "/b/new", True, None, 17),
            ),
        ]:
            with self.subTest(action=event["action"]):
                self.assertEqual(parse_event(json.dumps(event).encode()), change)


if TYPE_CHECKING:
    _ContractBase = TestCase
else:
    _ContractBase = object


class EtcdV2ContractMixin(_ContractBase):
    """What the client sees of etcd, checked against the fake here and a real etcd elsewhere.

    A test case mixing this in provides ``client`` (prefix ``/backends``), ``put``, ``remove``
    and ``deliver`` (which lets written data reach held requests).
    """

    client: EtcdV2Client
    put: Callable[..., int]
    remove: Callable[..., int]
    deliver: Callable[[], None]

    async def test_contract_listing(self) -> None:
        """A listing has every leaf under the prefix with its index, TTL and X-Etcd-Index."""
        port = self.put("/backends/web/port", "80")
        backend = self.put("/backends/jwilder/whoami/abc", "10.0.0.1:8000", ttl=60)
        last = self.put("/other/x", "y")
        snapshot = await self.client.snapshot()
        self.assertEqual(snapshot.index, last)
        self.assertEqual(
            set(snapshot.entries), {"/backends/web/port", "/backends/jwilder/whoami/abc"}
        )
        self.assertEqual(snapshot.entries["/backends/web/port"], Entry("80", port))
        entry = snapshot.entries["/backends/jwilder/whoami/abc"]
        self.assertEqual((entry.value, entry.modified_index), ("10.0.0.1:8000", backend))
        self.assertIn(entry.ttl, (59, 60))

    async def test_contract_absent_prefix(self) -> None:
        """A prefix that does not exist lists as empty, at the current index."""
        last = self.put("/other/x", "y")
        self.assertEqual(await self.client.snapshot(), Snapshot(index=last, entries={}))

    async def test_contract_history(self) -> None:
        """Waits below the current index are answered from history, one event each."""
        created = self.put("/backends/web/a", "10.0.0.1:80")
        deleted = self.remove("/backends/web/a")
        self.assertEqual(
            await self.client.wait(created),
            Change("set", "/backends/web/a", False, Entry("10.0.0.1:80", created), created),
        )
        self.assertEqual(
            await self.client.wait(created + 1),
            Change("delete", "/backends/web/a", False, None, deleted),
        )

    async def test_contract_held_wait(self) -> None:
        """A wait past the current index is answered by the next write under the prefix."""
        snapshot = await self.client.snapshot()
        waiting = Deferred.fromCoroutine(self.client.wait(snapshot.index + 1))
        self.put("/other/x", "y")
        written = self.put("/backends/web/a", "10.0.0.1:80")
        self.deliver()
        change = await waiting
        self.assertEqual(
            change, Change("set", "/backends/web/a", False, Entry("10.0.0.1:80", written), written)
        )

    async def test_contract_directory_delete(self) -> None:
        """Deleting a directory tree is one event naming the directory."""
        self.put("/backends/web/a", "10.0.0.1:80")
        self.put("/backends/web/b", "10.0.0.2:80")
        deleted = self.remove("/backends/web", recursive=True)
        self.assertEqual(
            await self.client.wait(deleted), Change("delete", "/backends/web", True, None, deleted)
        )

    async def test_contract_index_cleared(self) -> None:
        """After 1000 newer events anywhere, an old wait index fails with IndexCleared."""
        first = self.put("/backends/web/a", "10.0.0.1:80")
        for n in range(1001):
            self.put("/other/spam", str(n))
        with self.assertRaises(IndexCleared) as caught:
            await self.client.wait(first)
        self.assertIn("errorCode 401", caught.exception.problem)


class FakeEtcdV2ContractTests(EtcdV2ContractMixin, TestCase):
    """The contract against the fake (TestCase only for its async tests: no real I/O)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcdV2Resource()
        self.stub = StubTreq(self.etcd)
        self.client = v2_client(self.stub, self.clock)

    def put(self, key: str, value: str, ttl: int | None = None) -> int:
        """Set a key in the fake; its modifiedIndex."""
        return self.etcd.set(key, value, ttl=ttl)

    def remove(self, key: str, recursive: bool = False) -> int:
        """Delete a key or directory in the fake (it needs no ``recursive``)."""
        return self.etcd.delete(key)

    def deliver(self) -> None:
        """Move the fake's replies to the client."""
        self.stub.flush()
