"""A fake etcd v3 JSON gateway as a ``twisted.web`` resource, for ``treq.testing.StubTreq``.

It keeps keys with revisions, leases, a full history that can be compacted, and token auth the
way etcd 3.4's gateway does (``docs/etcd-http.md`` §3-4): every reply has a ``header`` with the
store revision, 64-bit numbers are JSON strings, keys and values are base64, and zero values are
left out.  ``/v3/watch`` answers ``created``, catches up from history, then holds the request
(``NOT_DONE_YET``) and writes one ``{"result": ...}`` line per later revision (the catch-up is
one line holding every past event, as etcd sends it).  Tests can make it
misbehave: canned replies, unanswered requests, bytes split anywhere, a final error object
without a newline (3.4 on shutdown), cut connections.  ``/v2/keys`` is a plain-text 404, like an
etcd without v2.

After a write that answers a held watch, call ``StubTreq.flush()`` so the client sees it.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import attrs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(field: object) -> str:
    return base64.b64decode(str(field)).decode() if field else ""


@attrs.frozen
class _KV:
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def json(self, key: str) -> dict[str, Any]:
        kv: dict[str, Any] = {
            "key": _b64(key),
            "create_revision": str(self.create_revision),
            "mod_revision": str(self.mod_revision),
            "version": str(self.version),
        }
        if self.value:
            kv["value"] = _b64(self.value)
        if self.lease:
            kv["lease"] = str(self.lease)
        return kv


@attrs.frozen
class _Event:
    key: str
    kv: _KV | None  # None for a DELETE
    revision: int
    prev: _KV | None

    def json(self) -> dict[str, Any]:
        if self.kv is None:
            event: dict[str, Any] = {
                "type": "DELETE",
                "kv": {"key": _b64(self.key), "mod_revision": str(self.revision)},
            }
        else:
            event = {"kv": self.kv.json(self.key)}
        if self.prev is not None:
            event["prev_kv"] = self.prev.json(self.key)
        return event


def _in_range(key: str, start: str, end: str) -> bool:
    """Whether ``key`` is in ``[start, end)``, or is ``start`` when there is no ``end``."""
    return start <= key < end if end else key == start


@attrs.define
class _Watch:
    request: Request
    start: str
    end: str
    next_revision: int

    def covers(self, key: str) -> bool:
        return _in_range(key, self.start, self.end)


class FakeEtcdV3Resource(Resource):
    """An in-memory etcd v3 gateway answering what a real etcd 3.4 would.

    :ivar requests: ``(path, decoded body)`` of every request, in order.
    :ivar aborted: how many held watches the client hung up on.
    :ivar down_hosts: ``Host`` header values answered with an HTML 502, like a broken proxy.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.revision = 1
        self.compacted = 0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.aborted = 0
        self.down_hosts: set[str] = set()
        self._kvs: dict[str, _KV] = {}
        self._history: list[tuple[int, list[_Event]]] = []
        self._leases: dict[int, int] = {}
        self._next_lease = 7587862072184440000
        self._watches: list[_Watch] = []
        self._canned: deque[Callable[[Request], bytes | int]] = deque()
        self._users: dict[str, str] = {}
        self._tokens: set[str] = set()
        self._issued = 0

    # -- writing, as a registrar would ------------------------------------------------------

    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Put one key (attached to ``lease`` if not 0) and return the new revision."""
        return self.txn([(key, value)], lease)

    def txn(self, puts: list[tuple[str, str]], lease: int = 0) -> int:
        """Put several keys at one revision, as a ``kv/txn`` of ``request_put`` does."""
        self.revision += 1
        events = []
        for key, value in puts:
            prev = self._kvs.get(key)
            kv = _KV(
                value,
                prev.create_revision if prev else self.revision,
                self.revision,
                prev.version + 1 if prev else 1,
                lease,
            )
            self._kvs[key] = kv
            events.append(_Event(key, kv, self.revision, prev))
        self._record(events)
        return self.revision

    def delete(self, key: str, end: str = "") -> int:
        """Delete ``key``, or every key in ``[key, end)``, at one revision; the revision."""
        return self._remove(k for k in self._kvs if _in_range(k, key, end))

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its ID."""
        self._next_lease += 1
        self._leases[self._next_lease] = ttl
        return self._next_lease

    def expire(self, lease: int) -> int:
        """Let a lease run out: its keys go in one revision."""
        del self._leases[lease]
        return self._remove(k for k, kv in self._kvs.items() if kv.lease == lease)

    def _remove(self, keys: Iterable[str]) -> int:
        """Delete ``keys`` at one revision (none: no new revision); the revision."""
        gone = sorted(keys)
        if not gone:
            return self.revision
        self.revision += 1
        self._record([_Event(k, None, self.revision, self._kvs.pop(k)) for k in gone])
        return self.revision

    def compact(self, revision: int) -> None:
        """Forget history before ``revision``, as ``kv/compaction`` does."""
        self.compacted = revision
        self._history = [(r, e) for r, e in self._history if r >= revision]

    def keys(self) -> dict[str, str]:
        """Every key and its value."""
        return {k: kv.value for k, kv in self._kvs.items()}

    def lease_of(self, key: str) -> int:
        """The lease a key is attached to (0 for none)."""
        return self._kvs[key].lease

    @property
    def leases(self) -> dict[int, int]:
        """Live leases and their granted TTL."""
        return dict(self._leases)

    # -- auth -----------------------------------------------------------------------------

    def enable_auth(self, user: str, password: str) -> None:
        """Require a token from ``/v3/auth/authenticate`` on every KV, lease and watch call."""
        self._users[user] = password

    def expire_tokens(self) -> None:
        """Make every token issued so far invalid (``--auth-token-ttl`` ran out)."""
        self._tokens.clear()

    # -- misbehaving ----------------------------------------------------------------------

    def fail_next(self, code: int, body: bytes, times: int = 1) -> None:
        """Answer the next ``times`` requests with this status and body."""

        def reply(request: Request) -> bytes:
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"application/json")
            return body

        self._canned.extend([reply] * times)

    def answer_next(self, handler: Callable[[Request], bytes | int], times: int = 1) -> None:
        """Let ``handler`` answer the next ``times`` requests, however it likes."""
        self._canned.extend([handler] * times)

    def hang_next(self, times: int = 1) -> None:
        """Never answer the next ``times`` requests, not even with headers (a frozen etcd)."""
        self._canned.extend([lambda request: NOT_DONE_YET] * times)

    def write_watches(self, data: bytes) -> None:
        """Write raw bytes to every held watch (to split or join messages as a test likes)."""
        for watch in self._watches:
            watch.request.write(data)

    def message(self, result: dict[str, Any]) -> bytes:
        """One watch message line carrying ``result`` and the current header."""
        return json.dumps({"result": {"header": self._header(), **result}}).encode() + b"\n"

    def progress(self) -> None:
        """Send a progress notification (a header and nothing else) on every held watch."""
        for watch in self._watches:
            watch.request.write(self.message({}))
            watch.next_revision = self.revision + 1

    def end_watches(self, final: bytes) -> None:
        """Write ``final`` to every held watch and end its response cleanly."""
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.request.write(final)
            watch.request.finish()

    def cut_watches(self) -> None:
        """Close every held watch's connection mid-body, like a killed etcd."""
        watches, self._watches = self._watches, []
        for watch in watches:
            transport = watch.request.channel.transport
            assert transport is not None
            transport.loseConnection()

    @property
    def watching(self) -> int:
        """How many watches are held open."""
        return len(self._watches)

    # -- serving --------------------------------------------------------------------------

    def render_GET(self, request: Request) -> bytes:
        self.requests.append((request.path.decode(), {}))
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"404 page not found\n"

    def render_POST(self, request: Request) -> bytes | int:
        path = request.path.decode()
        # A body may hold several requests, one JSON object per line (a watch's create and
        # progress requests); ``requests`` records the first.
        lines = [json.loads(line) for line in cast(Any, request).content.read().splitlines()]
        body = lines[0] if lines else {}
        self.requests.append((path, body))
        if (request.getHeader(b"host") or b"").decode().split(":")[0] in self.down_hosts:
            request.setResponseCode(502)
            request.setHeader(b"content-type", b"text/html")
            return b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
        if self._canned:
            return self._canned.popleft()(request)
        request.setHeader(b"content-type", b"application/json")
        if path == "/v3/auth/authenticate":
            return self._authenticate(request, body)
        refused = self._refuse(request)
        if refused is not None:
            return refused
        handler = {
            "/v3/kv/range": self._range,
            "/v3/kv/put": self._put,
            "/v3/kv/txn": self._txn,
            "/v3/kv/deleterange": self._deleterange,
            "/v3/lease/grant": self._grant,
            "/v3/lease/keepalive": self._keepalive,
            "/v3/lease/revoke": self._revoke,
        }.get(path)
        if path == "/v3/watch":
            return self._watch(
                request, body["create_request"], {"progress_request": {}} in lines[1:]
            )
        if handler is None:
            request.setResponseCode(404)
            return b"Not Found"
        reply = handler(request, body)
        return reply if isinstance(reply, bytes) else json.dumps(reply).encode()

    def _header(self) -> dict[str, str]:
        return {"cluster_id": "14841639068965178418", "revision": str(self.revision)}

    def _error(self, request: Request, http: int, code: int, message: str) -> bytes:
        request.setResponseCode(http)
        return json.dumps({"error": message, "message": message, "code": code}).encode()

    def _authenticate(self, request: Request, body: dict[str, Any]) -> bytes:
        if self._users.get(body.get("name", "")) != body.get("password"):
            return self._error(
                request, 400, 3, "etcdserver: authentication failed, invalid user ID or password"
            )
        self._issued += 1
        token = f"fakeToken.{self._issued}"
        self._tokens.add(token)
        return json.dumps({"header": self._header(), "token": token}).encode()

    def _refuse(self, request: Request) -> bytes | None:
        if not self._users:
            return None
        token = (request.getHeader(b"authorization") or b"").decode()
        if not token:
            return self._error(request, 400, 3, "etcdserver: user name is empty")
        if token not in self._tokens:
            return self._error(request, 401, 16, "etcdserver: invalid auth token")
        return None

    def _range(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        start, end = _text(body.get("key")), _text(body.get("range_end"))
        found = sorted(k for k in self._kvs if _in_range(k, start, end))
        reply: dict[str, Any] = {"header": self._header()}
        if found:
            reply["kvs"] = [self._kvs[k].json(k) for k in found]
            reply["count"] = str(len(found))
        return reply

    def _put(self, request: Request, body: dict[str, Any]) -> dict[str, Any] | bytes:
        lease = int(body.get("lease", 0))
        if lease and lease not in self._leases:
            return self._error(request, 404, 5, "etcdserver: requested lease not found")
        self.put(_text(body["key"]), _text(body.get("value")), lease)
        return {"header": self._header()}

    def _txn(self, request: Request, body: dict[str, Any]) -> dict[str, Any] | bytes:
        puts = [op["request_put"] for op in body.get("success", [])]
        leases = {int(p.get("lease", 0)) for p in puts}
        if any(lease and lease not in self._leases for lease in leases):
            return self._error(request, 404, 5, "etcdserver: requested lease not found")
        (lease,) = leases
        self.txn([(_text(p["key"]), _text(p.get("value"))) for p in puts], lease)
        return {"header": self._header(), "succeeded": True}

    def _deleterange(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        self.delete(_text(body["key"]), _text(body.get("range_end")))
        return {"header": self._header()}

    def _grant(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        ttl = int(body["TTL"])
        return {"header": self._header(), "ID": str(self.grant(ttl)), "TTL": str(ttl)}

    def _keepalive(self, request: Request, body: dict[str, Any]) -> bytes:
        lease = int(body["ID"])
        result: dict[str, Any] = {"header": self._header(), "ID": str(lease)}
        if lease in self._leases:
            result["TTL"] = str(self._leases[lease])
        return json.dumps({"result": result}).encode() + b"\n"

    def _revoke(self, request: Request, body: dict[str, Any]) -> dict[str, Any] | bytes:
        lease = int(body["ID"])
        if lease not in self._leases:
            return self._error(request, 404, 5, "etcdserver: requested lease not found")
        self.expire(lease)
        return {"header": self._header()}

    def _watch(self, request: Request, create: dict[str, Any], progress: bool) -> int:
        start, end = _text(create.get("key")), _text(create.get("range_end"))
        revision = int(create.get("start_revision", 0)) or self.revision + 1
        request.write(self.message({"created": True}))
        if progress:
            # etcd 3.4.23 answers at once, even before the catch-up events (measured).
            request.write(self.message({"watch_id": "-1"}))
        if revision < self.compacted:
            request.write(
                json.dumps(
                    {
                        "result": {
                            "header": {"cluster_id": "14841639068965178418"},
                            "canceled": True,
                            "compact_revision": str(self.compacted),
                        }
                    }
                ).encode()
                + b"\n"
            )
            return NOT_DONE_YET
        watch = _Watch(request, start, end, revision)
        # Like etcd, a catch-up is one message holding every past event.
        self._send(watch, [e for _, events in self._history for e in events])
        self._watches.append(watch)

        def gone(_: object) -> None:
            if watch in self._watches:
                self._watches.remove(watch)
                self.aborted += 1

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET

    def _send(self, watch: _Watch, events: list[_Event]) -> None:
        matching = [e for e in events if e.revision >= watch.next_revision and watch.covers(e.key)]
        if matching:
            watch.request.write(self.message({"events": [e.json() for e in matching]}))
            watch.next_revision = matching[-1].revision + 1

    def _record(self, events: list[_Event]) -> None:
        self._history.append((self.revision, events))
        for watch in list(self._watches):
            self._send(watch, events)
