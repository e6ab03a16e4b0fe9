"""Hostile etcd replies: whatever a server or a proxy in front of it sends, both clients raise
only their own errors (:class:`RegistryError` and its subclasses), with one clipped line saying
what was wrong, and leave no timer or connection behind."""

from __future__ import annotations

import json
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request

from ddiscover.registry.access import Credentials
from ddiscover.registry.api import detect_api
from ddiscover.registry.client import EtcdHTTP, HTTPClientLike
from ddiscover.registry.decoding import LISTING_DEPTH, decode_object
from ddiscover.registry.errors import MalformedError, RegistryError, RegistryUnavailable
from ddiscover.registry.etcd2 import EtcdV2Client, parse_listing
from ddiscover.registry.etcd3 import EtcdV3Client, parse_events, parse_range
from tests.fake_etcd import FakeEtcdV2Resource
from tests.fake_etcd3 import FakeEtcdV3Resource

T = TypeVar("T")

ENDPOINT = URL.from_text("http://etcd-a.test:2379")
DEEP_ARRAY = b"[" * 100000
DEEP_OBJECT = b'{"a":' * 100000
HTML_503 = b"<html><head><title>503</title></head><body>" + b"x" * 5000 + b"</body></html>"

# Bodies etcd never sends, with what the error must say (its start).
NOT_JSON = [
    (DEEP_ARRAY, "JSON nested too deeply"),
    (DEEP_OBJECT, "JSON nested too deeply"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"1" * 5000, "not JSON"),
    (b"[]", "not a JSON object but an array"),
    (b'"node"', "not a JSON object but a string"),
    (b"null", "not a JSON object but null"),
    (b"12", "not a JSON object but a number"),
]


def run(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Start a client call the way the watcher does, as a cancellable Deferred."""
    return Deferred.fromCoroutine(coroutine)


def _promise(request: Request, length: int, sent: bytes) -> None:
    """etcd's headers with a Content-Length of ``length``, and ``sent`` of the body."""
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"x-etcd-index", b"9")
    request.setHeader(b"content-length", str(length).encode())
    request.write(sent)


def short_body(request: Request) -> int:
    """Promise 1,000 bytes, send 20, and hang up."""
    _promise(request, 1000, b'{"action":"get","no')
    transport = request.channel.transport
    assert transport is not None
    transport.loseConnection()
    return NOT_DONE_YET


def long_body(request: Request) -> int:
    """Promise 10 bytes and send a whole listing: the client reads 10 bytes of it."""
    _promise(request, 10, b'{"action":"get","node":{"dir":true}}')
    request.finish()
    return NOT_DONE_YET


def promise_more(request: Request) -> int:
    """Promise 1,000 bytes, send 20, and keep the connection open."""
    _promise(request, 1000, b'{"action":"get","no')
    return NOT_DONE_YET


class Streamer:
    """Answers one request with headers, then writes ``chunk`` each time :meth:`more` is called,
    as a server streaming a body without end does; :attr:`gone` says the client hung up."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.sent = 0
        self.gone = False
        self._request: Request | None = None

    def __call__(self, request: Request) -> int:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-etcd-index", b"9")
        request.write(b"")
        request.notifyFinish().addBoth(self._hung_up)
        self._request = request
        return NOT_DONE_YET

    def _hung_up(self, _: object) -> None:
        self.gone = True

    def more(self) -> None:
        """Write one more chunk, unless the client has hung up."""
        assert self._request is not None
        if not self.gone:
            self._request.write(self.chunk)
            self.sent += len(self.chunk)


class DecodeTests(SynchronousTestCase):
    """The pure decoders raise :class:`MalformedError` and nothing else."""

    def test_decode_object(self) -> None:
        """Deep nesting, invalid JSON and non-objects are each named."""
        for body, message in NOT_JSON:
            with self.subTest(body=body[:20]):
                error = self.assertRaises(MalformedError, decode_object, body)
                self.assertTrue(str(error).startswith(message), str(error))
                self.assertLess(len(str(error)), 300)

    def test_v2_listing_shapes(self) -> None:
        """A listing of a shape etcd never sends is malformed, whatever the shape."""
        for node in [
            [],
            "dir",
            12,
            {"dir": True, "nodes": "x"},
            {"dir": True, "nodes": [1]},
            {"dir": True, "key": ["x"] * 10, "nodes": [None]},
            {"key": "/a", "value": 5, "modifiedIndex": 1},
            {"key": 7, "value": "v", "modifiedIndex": 1},
            {"key": "/a", "value": "v", "modifiedIndex": "1"},
            {"key": "/a", "value": "v", "modifiedIndex": True},
        ]:
            with self.subTest(node=node):
                body = json.dumps({"action": "get", "node": node}).encode()
                self.assertRaises(MalformedError, parse_listing, 1, body)

    def test_v2_deep_listing(self) -> None:
        """A listing nested as deep as JSON allows is walked without recursion."""
        node: dict[str, Any] = {"key": "/d/leaf", "value": "v", "modifiedIndex": 2}
        for _ in range(450):
            node = {"dir": True, "key": "/d", "nodes": [node]}
        body = json.dumps({"action": "get", "node": node}).encode()
        self.assertEqual(list(parse_listing(1, body).entries), ["/d/leaf"])

    def test_v2_key_600_levels_deep(self) -> None:
        """A key 600 levels deep (1,200 JSON levels, past the default recursion limit) is
        listed with the other keys, for the layout to reject on its own; the recursion
        limit is as it was after the listing, and a listing past ``LISTING_DEPTH`` is
        malformed, not a crash."""
        leaf = "/backends/x" + "/d" * 600
        deep = json.dumps({"key": leaf, "value": "v", "modifiedIndex": 2})
        for level in range(600, 0, -1):  # json.dumps itself cannot nest that deep
            deep = f'{{"dir": true, "key": "/backends/x{"/d" * level}", "nodes": [{deep}]}}'
        good = json.dumps({"key": "/backends/web/a", "value": "10.0.0.1:80", "modifiedIndex": 3})
        body = f'{{"node": {{"dir": true, "key": "/backends", "nodes": [{deep}, {good}]}}}}'
        limit = sys.getrecursionlimit()
        entries = parse_listing(1, body.encode()).entries
        self.assertEqual(sorted(entries), ["/backends/web/a", leaf])
        self.assertEqual(sys.getrecursionlimit(), limit)
        too_deep = b'{"node":' + b'{"nodes":[' * LISTING_DEPTH + b"]}" * LISTING_DEPTH + b"}"
        self.assertRaises(MalformedError, parse_listing, 1, too_deep)
        self.assertEqual(sys.getrecursionlimit(), limit)

    def test_v3_shapes(self) -> None:
        """Ranges and watch events of shapes etcd never sends are malformed."""
        header = {"revision": "5"}
        for reply in [
            {"header": []},
            {"header": {"revision": "²"}},
            {"header": {"revision": "9" * 5000}},
            {"header": header, "kvs": "x"},
            {"header": header, "kvs": {"key": "x"}},
            {"header": header, "kvs": [{"key": 5, "mod_revision": "1"}]},
            {"header": header, "kvs": [{"key": "YQ==", "value": [], "mod_revision": "1"}]},
            {"header": header, "kvs": [{"key": "é", "mod_revision": "1"}]},
        ]:
            with self.subTest(reply=reply):
                self.assertRaises(MalformedError, parse_range, reply)
        for result in [
            {"events": "x"},
            {"events": [{"kv": "x"}]},
            {"events": [{"kv": {"key": "YQ==", "mod_revision": None}}]},
        ]:
            with self.subTest(result=result):
                self.assertRaises(MalformedError, parse_events, result)


class HostileCase(SynchronousTestCase):
    """A client of a fake etcd behind :attr:`stub`, on a fake clock."""

    stub: StubTreq
    clock: Clock

    def etcd_http(self, **options: Any) -> EtcdHTTP:
        """The request layer over :attr:`stub`, with a 1 MiB body cap unless ``options`` say."""
        http: HTTPClientLike = self.stub  # type: ignore[assignment]
        options.setdefault("max_body", 1 << 20)
        return EtcdHTTP(http, self.clock, (ENDPOINT,), request_timeout=5.0, **options)

    def problem(self, d: Deferred[Any]) -> str:
        """The one-line problem ``d`` failed with, which must be a RegistryError."""
        self.stub.flush()
        error = self.failureResultOf(d, RegistryError).value
        self.assertNotIn("\n", str(error))
        self.assertLess(len(error.problem), 300, error.problem)
        return error.problem


class V2HostileTests(HostileCase):
    """The v2 client, facing hostile replies to listings and waits."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcdV2Resource()
        self.stub = StubTreq(self.etcd)
        self.http = self.etcd_http()
        self.client = EtcdV2Client(self.http, "/backends", watch_timeout=60.0)

    def assert_clean(self) -> None:
        """No timer is left on the clock and no wait is held open."""
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.etcd.waiting, 0)

    def test_not_json(self) -> None:
        """Every undecodable 200 is a bad listing or a bad event, never a crash."""
        for body, _ in NOT_JSON:
            for call, what in [(self.client.snapshot, "bad listing"), (self.wait, "bad event")]:
                with self.subTest(body=body[:20], what=what):
                    self.etcd.fail_next(200, body)
                    self.assertEqual(self.problem(run(call()))[: len(what)], what)
        self.assert_clean()

    def wait(self) -> Coroutine[Any, Any, Any]:
        """A wait from index 4."""
        return self.client.wait(4)

    def test_error_bodies(self) -> None:
        """Error replies whose body is hostile still give one line with the status."""
        for code, body, expected in [
            (400, DEEP_ARRAY, "HTTP 400: " + "[" * 200 + "... (100000 bytes)"),
            (400, b'{"errorCode":[1],"message":{"a":1},"cause":[[]]}', "HTTP 400"),
            (
                400,
                b'{"errorCode":true,"message":"' + b"m" * 1000 + b'"}',
                "HTTP 400: " + "m" * 200,
            ),
            (503, HTML_503, "HTTP 503: <html><head><title>503</title></head><body>xxx"),
        ]:
            with self.subTest(code=code, body=body[:20]):
                self.etcd.fail_next(code, body)
                problem = self.problem(run(self.client.snapshot()))
                self.assertTrue(problem.startswith(expected), problem)

    def test_failure_forgets_kept_alive_connections(self) -> None:
        """After a reply that was not what it said, the pool's kept-alive connections are
        dropped, so the next request does not go out on one a bad reply left bytes on."""
        forgotten: list[None] = []
        etcd = self.etcd_http(forget_connections=lambda: forgotten.append(None))
        client = EtcdV2Client(etcd, "/backends", watch_timeout=60.0)
        self.etcd.fail_next(200, b"{not json")
        self.problem(run(client.snapshot()))
        self.assertEqual(len(forgotten), 1)
        self.stub.flush()
        self.successResultOf(run(client.snapshot()))
        self.assertEqual(len(forgotten), 1)

    def test_html_503_rotates(self) -> None:
        """An HTML 503 from a proxy in front of etcd is unavailability."""
        self.etcd.fail_next(503, HTML_503, etcd_headers=False)
        d = run(self.client.snapshot())
        self.stub.flush()
        self.failureResultOf(d, RegistryUnavailable)

    def test_short_content_length(self) -> None:
        """A body shorter than its Content-Length, then a hang-up, is a cut-off reply."""
        self.etcd.answer_next(short_body)
        self.assertTrue(self.problem(run(self.client.snapshot())).startswith("response cut off"))
        self.assert_clean()

    def test_long_content_length(self) -> None:
        """A body longer than its Content-Length is read up to it, and is not JSON."""
        self.etcd.answer_next(long_body)
        self.assertTrue(self.problem(run(self.client.snapshot())).startswith("bad listing"))

    def test_content_length_never_met(self) -> None:
        """A body that never reaches its Content-Length is bounded by the request timeout."""
        self.etcd.answer_next(promise_more)
        d = run(self.client.snapshot())
        self.stub.flush()
        self.clock.advance(5)
        self.assertEqual(self.problem(d), "listing not received within 5s")
        self.assert_clean()

    def test_endless_body(self) -> None:
        """A listing body that trickles on forever is cut at the request timeout."""
        streamer = Streamer(b" ")
        self.etcd.answer_next(streamer)
        d = run(self.client.snapshot())
        for _ in range(60):  # a byte every 0.1 s, for 6 s
            streamer.more()
            self.stub.flush()
            self.clock.advance(0.1)
        self.assertEqual(self.problem(d), "listing not received within 5s")
        self.assertTrue(streamer.gone)
        self.assert_clean()

    def test_huge_body(self) -> None:
        """A body streaming on past the size cap is aborted once over it, not buffered whole."""
        streamer = Streamer(b" " * 16384)
        self.etcd.answer_next(streamer)
        d = run(self.client.snapshot())
        for _ in range(12800):  # 200 MiB, if the client never hung up
            streamer.more()
            self.stub.flush()
            if streamer.gone:
                break
        self.assertEqual(self.problem(d), "response body is over 1048576 bytes")
        self.assertLessEqual(streamer.sent, (1 << 20) + 16384)
        self.assert_clean()


class V3HostileTests(HostileCase):
    """The v3 client, facing hostile replies to ranges, watches and authentication."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcdV3Resource()
        self.stub = StubTreq(self.etcd)
        self.client = self.make_client()

    def make_client(self, credentials: Credentials | None = None) -> EtcdV3Client:
        """A v3 client of the fake etcd."""
        etcd = self.etcd_http(credentials=credentials)
        return EtcdV3Client(etcd, "/backends", watch_timeout=60.0)

    def test_range_not_json(self) -> None:
        """Every undecodable range reply is a bad reply, never a crash."""
        for body, message in NOT_JSON:
            with self.subTest(body=body[:20]):
                self.etcd.fail_next(200, body)
                problem = self.problem(run(self.client.snapshot()))
                self.assertTrue(problem.startswith(f"bad kv/range reply: {message}"), problem)

    def test_range_shapes(self) -> None:
        """A range reply of a shape etcd never sends is a bad reply."""
        for reply in [{"kvs": []}, {"header": {"revision": "1"}, "kvs": "x"}]:
            with self.subTest(reply=reply):
                self.etcd.fail_next(200, json.dumps(reply).encode())
                problem = self.problem(run(self.client.snapshot()))
                self.assertTrue(problem.startswith("bad range reply: "), problem)

    def test_error_bodies(self) -> None:
        """Error replies whose body is hostile still give one line with the status."""
        for code, body, expected in [
            (400, DEEP_OBJECT, 'kv/range: HTTP 400: {"a":{"a":'),
            (400, b'{"code":"16","message":[[[]]]}', "kv/range: HTTP 400"),
            (503, HTML_503, "kv/range: HTTP 503: <html><head>"),
        ]:
            with self.subTest(body=body[:20]):
                self.etcd.fail_next(code, body)
                problem = self.problem(run(self.client.snapshot()))
                self.assertTrue(problem.startswith(expected), problem)

    def test_watch_messages(self) -> None:
        """Hostile watch messages end the stream as unavailability or a RegistryError."""
        for line, expected in [
            (DEEP_ARRAY[:60000] + b"\n", "bad watch message: JSON nested too deeply"),
            (b"[1]\n", "bad watch message: not a JSON object but an array"),
            (b'{"result":[]}\n', "bad watch message: no 'result' object"),
            (b'{"result":{"events":"x"}}\n', "bad watch message: 'events' is not a list"),
            (b'{"result":{"header":{"revision":[]}}}\n', "bad watch message: field 'revision'"),
            (b'{"result":{"canceled":true,"compact_revision":{}}}\n', "bad watch message"),
            (b'{"error":[[[]]]}\n', "watch ended: no reason given"),
            (b'{"error":{"message":"' + b"e" * 1000 + b'"}}\n', "watch ended: " + "e" * 200),
            (b'{"result":{"canceled":true,"cancel_reason":{}}}\n', "watch canceled: "),
        ]:
            with self.subTest(line=line[:30]):
                d = run(self.client.watch(2, lambda changes, index: None))
                self.stub.flush()
                self.etcd.write_watches(line)
                problem = self.problem(d)
                self.assertTrue(problem.startswith(expected), problem)
        self.stub.flush()
        self.assertEqual(self.etcd.watching, 0)

    def test_auth_reply(self) -> None:
        """An authenticate reply without a token string is unavailability."""
        client = self.make_client(Credentials("root", "pw"))
        for body in [DEEP_ARRAY, b'{"token":5}', b"[]"]:
            with self.subTest(body=body[:20]):
                self.etcd.fail_next(200, body)
                problem = self.problem(run(client.snapshot()))
                self.assertTrue(problem.startswith("bad authenticate reply: "), problem)

    def test_detection(self) -> None:
        """Detecting the API on a hostile /v2/keys reply fails with one line."""
        http: HTTPClientLike = self.stub  # type: ignore[assignment]
        etcd = EtcdHTTP(http, self.clock, (ENDPOINT,), request_timeout=5.0)
        for code in (200, 404, 503):
            with self.subTest(code=code):
                fake = FakeEtcdV2Resource()
                fake.fail_next(code, DEEP_ARRAY)
                etcd.http = StubTreq(fake)  # type: ignore[assignment]
                d = run(detect_api(etcd))
                if code == 404:
                    self.assertEqual(self.successResultOf(d), "v3")
                else:
                    self.failureResultOf(d, RegistryUnavailable)
