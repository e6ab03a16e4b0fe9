"""Tests for :mod:`ddiscover.registry.etcd3` and :mod:`ddiscover.registry.api` on fakes.

The v3 client talks to the fake gateway through ``StubTreq`` on a fake clock; the contract mixin
at the end is also run against a real etcd in ``tests/integration/test_registry_behaviour.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import NOT_DONE_YET

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.registry.access import Credentials
from ddiscover.registry.api import registry_client
from ddiscover.registry.client import EtcdHTTP, HTTPClientLike
from ddiscover.registry.errors import IndexCleared, RegistryError, RegistryUnavailable
from ddiscover.registry.etcd3 import EtcdV3Client, parse_events, parse_range, prefix_range
from ddiscover.registry.layout import Entry
from ddiscover.registry.values import Change, RegistryClient, Snapshot
from ddiscover.registry.watcher import RegistryWatcher, WatchState
from tests.fake_etcd import FakeEtcdV2Resource
from tests.fake_etcd3 import FakeEtcdV3Resource

T = TypeVar("T")

FIRST = URL.from_text("http://etcd-a.test:2379")
SECOND = URL.from_text("http://etcd-b.test:2379")
CLEARED = "etcd history no longer reaches index {index} ({error}); listing again"
CHOSEN = "etcd {endpoint} serves the {api} API; using it"


def run(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Start a client call the way the watcher does, as a cancellable Deferred."""
    return Deferred.fromCoroutine(coroutine)


class Batches:
    """Collects what a watch reports: a list of (changes, reached index) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[Change], int]] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, changes: Sequence[Change], index: int) -> None:
        self.seen.append((list(changes), index))
        for waiter in [w for w in self._waiting if w[0] <= len(self.seen)]:
            self._waiting.remove(waiter)
            waiter[1].callback(None)

    def until(self, count: int) -> Deferred[None]:
        """Fire once ``count`` batches have been seen."""
        d: Deferred[None] = Deferred()
        if len(self.seen) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d


class PureTests(SynchronousTestCase):
    """The prefix range and the JSON readers."""

    def test_prefix_range(self) -> None:
        """The range holds what is under the prefix and stops before ``/backends-x``."""
        self.assertEqual(prefix_range("/backends"), ("/backends/", "/backends0"))
        self.assertEqual(prefix_range("/backends/"), ("/backends/", "/backends0"))
        self.assertEqual(prefix_range("/"), ("/", "0"))

    def test_parse_range(self) -> None:
        """Keys and values are base64, numbers strings, and empty values left out."""
        reply = {
            "header": {"revision": "9"},
            "kvs": [
                {"key": "L2Ivdy9h", "mod_revision": "4", "value": "MTAuMC4wLjE6ODA="},
                {"key": "L2Ivdy9l", "mod_revision": "5"},
            ],
            "count": "2",
        }
        self.assertEqual(
            parse_range(reply),
            Snapshot(9, {"/b/w/a": Entry("10.0.0.1:80", 4), "/b/w/e": Entry("", 5)}),
        )
        self.assertEqual(parse_range({"header": {"revision": "3"}}), Snapshot(3, {}))

    def test_parse_events(self) -> None:
        """A PUT has no type and carries the value; a DELETE has only key and revision."""
        result = {
            "events": [
                {"kv": {"key": "L2Ivdy9h", "mod_revision": "7", "value": "eA=="}},
                {"type": "DELETE", "kv": {"key": "L2Ivdy9i", "mod_revision": "7"}},
            ]
        }
        self.assertEqual(
            parse_events(result),
            [
                Change("put", "/b/w/a", False, Entry("x", 7), 7),
                Change("delete", "/b/w/b", False, None, 7),
            ],
        )

    def test_malformed(self) -> None:
        """Bad fields raise with a message naming them."""
        for reply, message in [
            ({}, "no 'header' object"),
            ({"header": {"revision": "x"}}, "field 'revision' is missing or not a number"),
            ({"header": {"revision": "1"}, "kvs": "no"}, "'kvs' is not a list of objects"),
            (
                {"header": {"revision": "1"}, "kvs": [{"key": "%%", "mod_revision": "1"}]},
                "'%%' is not base64",
            ),
        ]:
            with self.subTest(reply=reply):
                e = self.assertRaises(ValueError, parse_range, reply)
                self.assertEqual(str(e), message)


class V3TestCase(SynchronousTestCase):
    """A v3 client on a fake clock talking to the fake gateway through ``StubTreq``."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcdV3Resource()
        self.stub = StubTreq(self.etcd)
        self.http: HTTPClientLike = self.stub  # type: ignore[assignment]
        self.client = self.make_client()

    def make_client(self, *endpoints: URL, credentials: Credentials | None = None) -> EtcdV3Client:
        """A v3 client of the fake on ``endpoints`` (default: just FIRST)."""
        etcd = EtcdHTTP(
            self.http,
            self.clock,
            endpoints or (FIRST,),
            request_timeout=5.0,
            credentials=credentials,
            max_body=4096,
        )
        return EtcdV3Client(etcd, "/backends", watch_timeout=60.0)

    def assert_clean(self) -> None:
        """No timer is left on the clock and no watch is held open."""
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.etcd.watching, 0)


class SnapshotTests(V3TestCase):
    """``snapshot()`` ranges over the prefix."""

    def test_listing(self) -> None:
        """Only keys under ``/backends/`` are listed, at the store revision."""
        self.etcd.put("/backends/web/port", "80")
        self.etcd.put("/backends-x/a", "b")
        self.etcd.put("/backends/jwilder/whoami/abc", "10.0.0.1:8000")
        snapshot = self.successResultOf(run(self.client.snapshot()))
        self.assertEqual(
            snapshot,
            Snapshot(
                4,
                {
                    "/backends/web/port": Entry("80", 2),
                    "/backends/jwilder/whoami/abc": Entry("10.0.0.1:8000", 4),
                },
            ),
        )
        self.assertEqual(
            self.etcd.requests,
            [("/v3/kv/range", {"key": "L2JhY2tlbmRzLw==", "range_end": "L2JhY2tlbmRzMA=="})],
        )

    def test_errors(self) -> None:
        """Error bodies of 3.4 and 3.6 become one-line errors; 5xx rotates the endpoint."""
        cases: list[tuple[int, bytes, type[RegistryError], str]] = [
            (
                400,
                b'{"error":"etcdserver: user name is empty","message":"etcdserver: user name'
                b' is empty","code":3}',
                RegistryError,
                "kv/range: HTTP 400 code 3: etcdserver: user name is empty",
            ),
            (503, b'{"code":14,"message":"unavailable"}', RegistryUnavailable, "kv/range: HTTP"),
            (200, b"<html>", RegistryUnavailable, "bad kv/range reply: not JSON"),
            (200, b"{}", RegistryUnavailable, "bad range reply: no 'header' object"),
        ]
        for code, body, kind, problem in cases:
            with self.subTest(code=code, body=body):
                self.etcd.fail_next(code, body)
                error = self.failureResultOf(run(self.client.snapshot()), RegistryError).value
                self.assertIs(type(error), kind)
                self.assertTrue(error.problem.startswith(problem), error.problem)
                self.assertNotIn("\n", str(error))

    def test_headers_timeout(self) -> None:
        """A frozen etcd is unavailable after the request timeout, leaving no timer."""
        self.etcd.hang_next()
        d = run(self.client.snapshot())
        self.clock.advance(5)
        failure = self.failureResultOf(d, RegistryUnavailable)
        self.assertEqual(failure.value.problem, "no response within 5s")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FailoverTests(V3TestCase):
    """The client sticks to a working endpoint and moves on from one that fails."""

    def test_rotates_and_sticks(self) -> None:
        """A 502 from the first endpoint moves to the second, which is then kept."""
        client = self.make_client(FIRST, SECOND)
        self.etcd.down_hosts.add("etcd-a.test")
        self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.assertEqual(client.endpoint, SECOND)
        self.successResultOf(run(client.snapshot()))
        self.successResultOf(run(client.snapshot()))
        self.assertEqual(client.endpoint, SECOND)


class AuthTests(V3TestCase):
    """Token auth: fetched once, sent raw, fetched again when etcd says it is invalid."""

    def setUp(self) -> None:
        super().setUp()
        self.etcd.enable_auth("root", "s3cret")
        self.client = self.make_client(credentials=Credentials("root", "s3cret"))

    def paths(self) -> list[str]:
        return [path for path, _ in self.etcd.requests]

    def test_token_reused(self) -> None:
        """One authenticate serves many calls."""
        self.successResultOf(run(self.client.snapshot()))
        self.successResultOf(run(self.client.snapshot()))
        self.assertEqual(self.paths(), ["/v3/auth/authenticate", "/v3/kv/range", "/v3/kv/range"])

    def test_refreshed_on_code_16(self) -> None:
        """An expired token (401 code 16) is replaced and the call repeated once."""
        self.successResultOf(run(self.client.snapshot()))
        self.etcd.expire_tokens()
        self.successResultOf(run(self.client.snapshot()))
        self.assertEqual(
            self.paths(),
            [
                "/v3/auth/authenticate",
                "/v3/kv/range",
                "/v3/kv/range",
                "/v3/auth/authenticate",
                "/v3/kv/range",
            ],
        )

    def test_wrong_password(self) -> None:
        """A wrong password is a one-line error that names the call."""
        client = self.make_client(credentials=Credentials("root", "wrong"))
        failure = self.failureResultOf(run(client.snapshot()), RegistryError)
        self.assertTrue(failure.value.problem.startswith("authenticating: HTTP 400 code 3: "))

    def test_watch_refreshes(self) -> None:
        """A watch refused for an expired token gets a fresh one and is repeated once."""
        self.successResultOf(run(self.client.snapshot()))
        self.etcd.expire_tokens()
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.assertEqual(self.paths()[-3:], ["/v3/watch", "/v3/auth/authenticate", "/v3/watch"])
        self.etcd.put("/backends/web/a", "10.0.0.1:80")
        self.stub.flush()
        self.assertEqual([index for _, index in batches.seen], [2])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assert_clean()

    def test_watch_refused_twice(self) -> None:
        """A watch whose fresh token is refused too fails with etcd's code, without looping."""
        self.successResultOf(run(self.client.snapshot()))
        self.etcd.fail_next(401, b'{"message":"etcdserver: invalid auth token","code":16}')
        self.etcd.fail_next(200, b'{"token":"not-one-etcd-knows"}')
        failure = self.failureResultOf(run(self.client.watch(2, Batches())), RegistryError)
        self.assertEqual(failure.value.code, 16)
        self.assertEqual(self.paths()[-3:], ["/v3/watch", "/v3/auth/authenticate", "/v3/watch"])


class WatchTests(V3TestCase):
    """``watch(revision, on_changes)`` streams changes until quiet, compacted or cut."""

    def test_stream(self) -> None:
        """Changes arrive one revision per batch; the request asks for progress, not prev_kv."""
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.assertEqual(
            self.etcd.requests[-1][1],
            {
                "create_request": {
                    "key": "L2JhY2tlbmRzLw==",
                    "range_end": "L2JhY2tlbmRzMA==",
                    "start_revision": 2,
                    "progress_notify": True,
                }
            },
        )
        self.etcd.put("/backends/web/a", "10.0.0.1:80")
        self.etcd.put("/other/x", "y")
        self.etcd.delete("/backends/web/a")
        self.stub.flush()
        self.assertEqual(
            batches.seen,
            [
                ([Change("put", "/backends/web/a", False, Entry("10.0.0.1:80", 2), 2)], 2),
                ([Change("delete", "/backends/web/a", False, None, 4)], 4),
            ],
        )
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()
        self.assertEqual(self.etcd.aborted, 1)
        self.assert_clean()

    def test_catch_up_and_batch(self) -> None:
        """Past revisions are replayed; a lease expiry is one batch of deletes."""
        lease = self.etcd.grant(15)
        self.etcd.txn([("/backends/web/a", "10.0.0.1:80"), ("/backends/web/port", "80")], lease)
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.etcd.expire(lease)
        self.stub.flush()
        self.assertEqual([len(c) for c, _ in batches.seen], [2, 2])
        self.assertTrue(all(c.removes for c in batches.seen[1][0]))
        self.assertEqual(batches.seen[1][1], 3)
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_split_messages(self) -> None:
        """Messages are split on newlines, not on chunks: halves and pairs both work."""
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.stub.flush()
        line = self.etcd.message(
            {"events": [{"kv": {"key": "L2JhY2tlbmRzL3cvYQ==", "mod_revision": "2"}}]}
        )
        self.etcd.write_watches(line[:10])
        self.stub.flush()
        self.assertEqual(batches.seen, [])
        self.etcd.write_watches(line[10:] + line.replace(b'"2"', b'"3"'))
        self.stub.flush()
        self.assertEqual([index for _, index in batches.seen], [2, 3])
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_progress(self) -> None:
        """A progress notification reports no changes and the revision reached."""
        self.etcd.put("/other/x", "y")
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.etcd.progress()
        self.stub.flush()
        self.assertEqual(batches.seen, [([], 2)])
        d.cancel()
        self.failureResultOf(d, CancelledError)

    def test_progress_reply_reported_when_quiet(self) -> None:
        """A quiet watch reports the revision etcd's progress reply vouched for, at its end.

        On a busy cluster with a quiet prefix, the next watch then starts from there instead
        of the old revision, which compaction would eventually turn into a full re-list.
        """
        for n in range(5):
            self.etcd.put("/other/x", str(n))
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.stub.flush()
        self.assertEqual(batches.seen, [])
        self.clock.advance(60)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(batches.seen, [([], 6)])
        self.assert_clean()

    def test_progress_reply_before_catch_up(self) -> None:
        """A progress reply that comes before the catch-up (etcd 3.4.23) skips nothing."""
        self.etcd.put("/backends/web/a", "10.0.0.1:80")
        self.etcd.put("/other/x", "y")
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.stub.flush()
        self.clock.advance(60)
        self.successResultOf(d)
        self.assertEqual([index for _, index in batches.seen], [2, 3])

    def test_progress_reply_then_cut(self) -> None:
        """A stream cut after the progress reply reports nothing: its catch-up may be lost."""
        self.etcd.put("/backends/web/a", "10.0.0.1:80")
        self.etcd.put("/other/x", "y")

        def created_then_cut(request: Any) -> int:
            request.write(self.etcd.message({"created": True}))
            request.write(self.etcd.message({"watch_id": "-1"}))
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        self.etcd.answer_next(created_then_cut)
        batches = Batches()
        d = run(self.client.watch(2, batches))
        self.stub.flush()
        self.failureResultOf(d, RegistryUnavailable)
        self.assertEqual(batches.seen, [])

    def test_quiet(self) -> None:
        """A stream with no message for the watch timeout ends normally and is closed."""
        d = run(self.client.watch(2, Batches()))
        self.clock.advance(59)
        self.etcd.progress()
        self.stub.flush()
        self.clock.advance(59)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d))
        self.stub.flush()
        self.assertEqual(self.etcd.aborted, 1)
        self.assert_clean()

    def test_compacted(self) -> None:
        """A start revision older than the compaction is IndexCleared, and the stream closed."""
        for n in range(5):
            self.etcd.put("/backends/web/a", str(n))
        self.etcd.compact(5)
        failure = self.failureResultOf(run(self.client.watch(2, Batches())), IndexCleared)
        self.assertEqual(failure.value.problem, "revision 2 is compacted (oldest kept: 5)")
        self.assert_clean()

    def test_final_error_without_newline(self) -> None:
        """etcd 3.4's final error object, unterminated, says why the stream ended."""
        d = run(self.client.watch(2, Batches()))
        self.etcd.end_watches(
            b'{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing",'
            b'"http_status":"Service Unavailable"}}'
        )
        self.stub.flush()
        failure = self.failureResultOf(d, RegistryUnavailable)
        self.assertEqual(failure.value.problem, "watch ended: transport is closing")
        self.assertEqual(self.client.endpoint, FIRST)
        self.assert_clean()

    def test_ended_or_cut(self) -> None:
        """A stream that just ends, or is cut off, is unavailability."""
        d = run(self.client.watch(2, Batches()))
        self.etcd.end_watches(b"")
        self.stub.flush()
        self.assertEqual(
            self.failureResultOf(d, RegistryUnavailable).value.problem, "watch stream ended"
        )
        d = run(self.client.watch(2, Batches()))
        self.etcd.cut_watches()
        self.stub.flush()
        problem = self.failureResultOf(d, RegistryUnavailable).value.problem
        self.assertTrue(problem.startswith("watch cut off: "), problem)
        self.assert_clean()

    def test_garbage_and_huge(self) -> None:
        """A line that is not JSON, or longer than the body cap, ends the stream."""
        d = run(self.client.watch(2, Batches()))
        self.etcd.write_watches(b"<html>\n")
        self.stub.flush()
        problem = self.failureResultOf(d, RegistryUnavailable).value.problem
        self.assertTrue(problem.startswith("bad watch message: not JSON"), problem)
        d = run(self.client.watch(2, Batches()))
        self.etcd.write_watches(b"x" * 5000)
        self.stub.flush()
        problem = self.failureResultOf(d, RegistryUnavailable).value.problem
        self.assertEqual(problem, "a watch message is over 4096 bytes")
        self.assert_clean()

    def test_auth_cancel(self) -> None:
        """A watch the server cancels for another reason is a RegistryError naming it."""
        d = run(self.client.watch(2, Batches()))
        self.etcd.write_watches(
            self.etcd.message({"canceled": True, "cancel_reason": "user name is empty"})
        )
        self.stub.flush()
        failure = self.failureResultOf(d, RegistryError)
        self.assertEqual(failure.value.problem, "watch canceled: user name is empty")


class DetectionTests(SynchronousTestCase):
    """``--etcd-api auto`` asks ``/v2/keys`` once, then uses the chosen client."""

    def client(self, resource: Any, *endpoints: URL) -> tuple[RegistryClient, StubTreq, Clock]:
        clock = Clock()
        stub = StubTreq(resource)
        client = registry_client(
            "auto",
            stub,  # type: ignore[arg-type]
            clock,
            endpoints or (FIRST,),
            "/backends",
            request_timeout=5.0,
            watch_timeout=60.0,
        )
        return client, stub, clock

    def test_v3(self) -> None:
        """A plain-text 404 on /v2/keys means v3, logged once."""
        etcd = FakeEtcdV3Resource()
        etcd.put("/backends/web/port", "80")
        client, _, _ = self.client(etcd)
        self.assertEqual(client.api, "auto")
        with capturedLogs() as events:
            snapshot = self.successResultOf(run(client.snapshot()))
            self.successResultOf(run(client.snapshot()))
        self.assertEqual(snapshot.entries, {"/backends/web/port": Entry("80", 2)})
        self.assertEqual(client.api, "v3")
        [chosen] = [e for e in events if e.get("log_format") == CHOSEN]
        self.assertEqual((chosen["api"], chosen["endpoint"]), ("v3", "http://etcd-a.test:2379"))
        self.assertEqual([p for p, _ in etcd.requests].count("/v2/keys"), 1)

    def test_v2(self) -> None:
        """A JSON answer on /v2/keys means v2."""
        etcd = FakeEtcdV2Resource()
        etcd.set("/backends/web/port", "80")
        client, _, _ = self.client(etcd)
        snapshot = self.successResultOf(run(client.snapshot()))
        self.assertEqual(client.api, "v2")
        self.assertEqual(snapshot.entries, {"/backends/web/port": Entry("80", 4)})

    def test_v2_after_failover(self) -> None:
        """Once detection has failed over to the second endpoint, the v2 client lists there."""
        etcd = FakeEtcdV2Resource()
        etcd.set("/backends/web/port", "80")
        etcd.down_hosts.add("etcd-a.test")
        client, _, _ = self.client(etcd, FIRST, SECOND)
        failure = self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.assertEqual(failure.value.endpoint, FIRST)
        snapshot = self.successResultOf(run(client.snapshot()))
        self.assertEqual(snapshot.entries, {"/backends/web/port": Entry("80", 4)})
        self.assertEqual((client.api, client.endpoint), ("v2", SECOND))
        self.assertEqual(
            etcd.requests, ["/v2/keys", "/v2/keys", "/v2/keys/backends?recursive=true"]
        )

    def test_unreachable(self) -> None:
        """Until the server answers, the API stays unknown and the error is unavailability."""
        etcd = FakeEtcdV2Resource()
        etcd.fail_next(503, b"busy")
        client, _, _ = self.client(etcd)
        self.failureResultOf(run(client.snapshot()), RegistryUnavailable)
        self.assertEqual(client.api, "auto")


class V3WatcherTests(V3TestCase):
    """The shared watch loop driving the v3 client."""

    def setUp(self) -> None:
        super().setUp()
        self.published: list[Catalog] = []
        self.watcher = RegistryWatcher(
            self.client,
            self.clock,
            "/backends",
            self.published.append,
            backoff=lambda n: 1.0,
            publish_window=0,
        )
        self.logs = self.enterContext(capturedLogs())
        self.lease = self.etcd.grant(15)
        self.etcd.txn([("/backends/web/port", "80"), ("/backends/web/a", "10.0.0.1:80")])
        self.watcher.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        self.successResultOf(self.watcher.stopService())
        self.assert_clean()

    def test_lease_expiry_is_one_publish(self) -> None:
        """Two backends leaving in one revision publish one catalog."""
        self.etcd.txn(
            [("/backends/web/b", "10.0.0.2:80"), ("/backends/web/c", "10.0.0.3:80")], self.lease
        )
        self.stub.flush()
        self.etcd.expire(self.lease)
        self.stub.flush()
        web = Service("web", 80, frozenset({Backend("a", Address("10.0.0.1", 80))}))
        self.assertEqual(len(self.published), 3)
        self.assertEqual(self.published[-1], Catalog({"web": web}))
        self.assertEqual(self.watcher.api, "v3")

    def test_cut_then_compacted(self) -> None:
        """After a cut stream the watcher ranges again, so a compaction meanwhile is harmless."""
        self.etcd.cut_watches()
        self.etcd.put("/backends/web/b", "10.0.0.2:80")
        for n in range(3):
            self.etcd.put("/other/x", str(n))
        self.etcd.compact(self.etcd.revision)
        self.stub.flush()
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertIn("b", {b.id for b in self.watcher.catalog.services["web"].backends})
        self.assertIs(self.watcher.state, WatchState.WATCHING)
        self.assertEqual(
            self.etcd.requests[-1][1]["create_request"]["start_revision"], self.etcd.revision + 1
        )
        self.assertEqual(self.watcher.resyncs, 1)
        self.assertEqual(len([e for e in self.logs if e.get("log_format") == CLEARED]), 0)

    def test_compacted_while_quiet(self) -> None:
        """A quiet stream re-watches from the same revision; once compacted, it resyncs."""
        start = self.etcd.requests[-1][1]["create_request"]["start_revision"]
        self.etcd.put("/other/x", "1")
        self.etcd.put("/other/x", "2")
        self.etcd.compact(self.etcd.revision)
        self.clock.advance(60)
        self.stub.flush()
        self.assertEqual(len([e for e in self.logs if e.get("log_format") == CLEARED]), 1)
        self.assertEqual(
            self.etcd.requests[-1][1]["create_request"]["start_revision"], self.etcd.revision + 1
        )
        self.assertGreater(self.etcd.revision + 1, start)
        self.assertIs(self.watcher.state, WatchState.WATCHING)


if TYPE_CHECKING:
    _ContractBase = TestCase
else:
    _ContractBase = object


class EtcdV3ContractMixin(_ContractBase):
    """What the v3 client sees of etcd, checked against the fake here and a real etcd elsewhere.

    A test case mixing this in provides ``client`` (prefix ``/backends``), ``put``, ``remove``,
    ``compact`` and ``deliver`` (which lets written data reach held requests).
    """

    client: EtcdV3Client
    put: Callable[..., int]
    remove: Callable[..., int]
    compact: Callable[[int], None]
    deliver: Callable[[], None]

    async def test_contract_listing(self) -> None:
        """A range has every key under the prefix with its mod revision, at the revision."""
        port = self.put("/backends/web/port", "80")
        backend = self.put("/backends/jwilder/whoami/abc", "10.0.0.1:8000")
        last = self.put("/backends-x/y", "z")
        snapshot = await self.client.snapshot()
        self.assertEqual(
            snapshot,
            Snapshot(
                last,
                {
                    "/backends/web/port": Entry("80", port),
                    "/backends/jwilder/whoami/abc": Entry("10.0.0.1:8000", backend),
                },
            ),
        )

    async def test_contract_empty(self) -> None:
        """An empty prefix lists as empty, at the current revision."""
        last = self.put("/other/x", "y")
        self.assertEqual(await self.client.snapshot(), Snapshot(last, {}))

    async def test_contract_history_and_live(self) -> None:
        """A watch replays past revisions in one batch, then streams new ones."""
        created = self.put("/backends/web/a", "10.0.0.1:80")
        deleted = self.remove("/backends/web/a")
        batches = Batches()
        watching = Deferred.fromCoroutine(self.client.watch(created, batches))
        self.deliver()
        await batches.until(1)
        again = self.put("/backends/web/a", "10.0.0.2:80")
        self.deliver()
        await batches.until(2)
        watching.cancel()
        self.assertEqual(
            batches.seen,
            [
                (
                    [
                        Change(
                            "put", "/backends/web/a", False, Entry("10.0.0.1:80", created), created
                        ),
                        Change("delete", "/backends/web/a", False, None, deleted),
                    ],
                    deleted,
                ),
                (
                    [Change("put", "/backends/web/a", False, Entry("10.0.0.2:80", again), again)],
                    again,
                ),
            ],
        )
        with self.assertRaises(CancelledError):
            await watching

    async def test_contract_compacted(self) -> None:
        """A watch from a compacted revision fails with IndexCleared."""
        first = self.put("/backends/web/a", "1")
        last = self.put("/backends/web/a", "2")
        self.put("/backends/web/a", "3")
        self.compact(last)
        with self.assertRaises(IndexCleared) as caught:
            await self.client.watch(first, Batches())
        self.assertIn(f"oldest kept: {last}", caught.exception.problem)


class FakeEtcdV3ContractTests(EtcdV3ContractMixin, TestCase):
    """The contract against the fake (TestCase only for its async tests: no real I/O)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcdV3Resource()
        self.stub = StubTreq(self.etcd)
        etcd = EtcdHTTP(
            self.stub,  # type: ignore[arg-type]
            self.clock,
            [FIRST],
            request_timeout=5.0,
        )
        self.client = EtcdV3Client(etcd, "/backends", watch_timeout=60.0)

    def put(self, key: str, value: str) -> int:
        return self.etcd.put(key, value)

    def remove(self, key: str) -> int:
        return self.etcd.delete(key)

    def compact(self, revision: int) -> None:
        self.etcd.compact(revision)

    def deliver(self) -> None:
        self.stub.flush()
