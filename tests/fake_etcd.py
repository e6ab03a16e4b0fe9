"""A fake etcd v2 keys API as a ``twisted.web`` resource, for ``treq.testing.StubTreq``.

It keeps keys, directories, a bounded event history and the index the way etcd 3.4 does (see
``docs/etcd-http.md`` §2): recursive listings carry ``X-Etcd-Index``, a ``wait=true`` request
is answered from history or held open with ``NOT_DONE_YET`` (its headers sent at once, as etcd
does) until a test writes a matching key, and a wait older than the history gets errorCode 401.
Tests can also make it misbehave: canned error replies, requests that never get an answer,
dropped connections, waits cut off mid-body, and hosts that answer like a broken proxy.

After a write that answers a held wait, call ``StubTreq.flush()`` so the client sees it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

_KEYS = "/v2/keys"


@attrs.frozen
class _Event:
    action: str
    key: str
    is_dir: bool
    value: str | None
    index: int
    ttl: int | None

    def matches(self, prefix: str) -> bool:
        return prefix in ("/", self.key) or self.key.startswith(prefix + "/")

    def body(self) -> bytes:
        node: dict[str, Any] = {"key": self.key, "modifiedIndex": self.index}
        if self.is_dir:
            node["dir"] = True
        if self.value is not None:
            node["value"] = self.value
        if self.ttl is not None:
            node["ttl"] = self.ttl
        return json.dumps({"action": self.action, "node": node}).encode() + b"\n"


@attrs.define
class _Waiter:
    request: Request
    prefix: str
    index: int


def _normalise(key: str) -> str:
    return "/" + key.strip("/")


def _ancestors(key: str) -> list[str]:
    parts = key.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


class FakeEtcdV2Resource(Resource):
    """An in-memory etcd v2 keys API that answers what a real etcd 3.4 would.

    :ivar requests: the path and query of every request received, in order.
    :ivar aborted: how many held requests the client hung up on.
    :ivar down_hosts: ``Host`` header values answered with an HTML 502, like a broken proxy.
    """

    isLeaf = True

    def __init__(self, history: int = 1000) -> None:
        super().__init__()
        self.index = 3
        self.requests: list[str] = []
        self.aborted = 0
        self.down_hosts: set[str] = set()
        self._keys: dict[str, tuple[str, int, int | None]] = {}
        self._dirs: set[str] = set()
        self._history: deque[_Event] = deque(maxlen=history)
        self._waiters: list[_Waiter] = []
        self._canned: deque[Callable[[Request], bytes | int]] = deque()

    # -- writing, as a registrar would ------------------------------------------------------

    def set(self, key: str, value: str, ttl: int | None = None, action: str = "set") -> int:
        """Write ``key`` (making its parent directories) and return its modifiedIndex."""
        key = _normalise(key)
        self.index += 1
        self._dirs.update(_ancestors(key))
        self._keys[key] = (value, self.index, ttl)
        self._record(_Event(action, key, False, value, self.index, ttl))
        return self.index

    def mkdir(self, key: str) -> int:
        """Create an empty directory, as ``PUT ...?dir=true`` does."""
        key = _normalise(key)
        self.index += 1
        self._dirs.update([*_ancestors(key), key])
        self._record(_Event("set", key, True, None, self.index, None))
        return self.index

    def delete(self, key: str, action: str = "delete") -> int:
        """Remove a key, or a whole directory tree, with one event as etcd does."""
        key = _normalise(key)
        is_dir = key in self._dirs
        if is_dir:
            inside = key + "/"
            self._dirs = {d for d in self._dirs if d != key and not d.startswith(inside)}
            self._keys = {k: v for k, v in self._keys.items() if not k.startswith(inside)}
        elif self._keys.pop(key, None) is None:
            raise KeyError(key)
        self.index += 1
        self._record(_Event(action, key, is_dir, None, self.index, None))
        return self.index

    def expire(self, key: str) -> int:
        """Let a key's TTL run out."""
        return self.delete(key, action="expire")

    def wipe(self) -> None:
        """Forget everything, index included, like etcd restarted on a fresh data dir."""
        self.index = 3
        self._keys.clear()
        self._dirs.clear()
        self._history.clear()

    # -- misbehaving ----------------------------------------------------------------------

    def fail_next(self, code: int, body: bytes, times: int = 1, etcd_headers: bool = True) -> None:
        """Answer the next ``times`` requests with this status and body.

        With ``etcd_headers`` (the default) the reply has etcd's headers, X-Etcd-Index included.
        """

        def reply(request: Request) -> bytes:
            if etcd_headers:
                self._headers(request)
            request.setResponseCode(code)
            return body

        self._canned.extend([reply] * times)

    def answer_next(self, handler: Callable[[Request], bytes | int], times: int = 1) -> None:
        """Let ``handler`` answer the next ``times`` requests, however it likes."""
        self._canned.extend([handler] * times)

    def hang_next(self, times: int = 1) -> None:
        """Never answer the next ``times`` requests, not even with headers (a frozen etcd)."""
        self._canned.extend([lambda request: NOT_DONE_YET] * times)

    def stall_next(self, times: int = 1) -> None:
        """Send the headers of the next ``times`` replies, then never the body."""

        def stall(request: Request) -> int:
            self._headers(request)
            request.write(b"")
            request.notifyFinish().addErrback(self._hung_up)
            return NOT_DONE_YET

        self._canned.extend([stall] * times)

    def _hung_up(self, _: object) -> None:
        self.aborted += 1

    def drop_next(self, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests without answering."""

        def drop(request: Request) -> int:
            _hang_up(request)
            return NOT_DONE_YET

        self._canned.extend([drop] * times)

    def cut_waits(self) -> None:
        """Close every held wait's connection mid-body, like a killed etcd."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _hang_up(waiter.request)

    def end_waits_empty(self) -> None:
        """End every held wait with an empty body, which etcd's docs allow."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.request.finish()

    @property
    def waiting(self) -> int:
        """How many waits are being held open."""
        return len(self._waiters)

    # -- serving --------------------------------------------------------------------------

    def render_GET(self, request: Request) -> bytes | int:
        uri = request.uri.decode()
        self.requests.append(uri)
        if (request.getHeader(b"host") or b"").decode().split(":")[0] in self.down_hosts:
            request.setResponseCode(502)
            request.setHeader(b"content-type", b"text/html")
            return b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
        if self._canned:
            return self._canned.popleft()(request)
        path = request.path.decode()
        if not path.startswith(_KEYS):
            request.setResponseCode(404)
            return b"404 page not found\n"
        key = _normalise(path[len(_KEYS) :])
        if _arg(request, b"wait") == "true":
            return self._wait(request, key, int(_arg(request, b"waitIndex") or self.index + 1))
        return self._get(request, key, recursive=_arg(request, b"recursive") == "true")

    def _headers(self, request: Request) -> None:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-etcd-index", str(self.index).encode())
        request.setHeader(b"x-etcd-cluster-id", b"cdf818194e3a8c32")

    def _error(self, request: Request, http: int, code: int, message: str, cause: str) -> bytes:
        request.setResponseCode(http)
        body = {"errorCode": code, "message": message, "cause": cause, "index": self.index}
        return json.dumps(body).encode() + b"\n"

    def _node(self, key: str, recursive: bool, top: bool) -> dict[str, Any]:
        if key in self._keys:
            value, index, ttl = self._keys[key]
            leaf: dict[str, Any] = {"key": key, "value": value, "modifiedIndex": index}
            if ttl is not None:
                leaf["ttl"] = ttl
            return leaf
        node: dict[str, Any] = {"dir": True}
        if key != "/":
            node["key"] = key
        if top or recursive:
            inside = key.rstrip("/") + "/"
            children = sorted(
                k
                for k in self._keys.keys() | self._dirs
                if k.startswith(inside) and "/" not in k[len(inside) :]
            )
            if children:
                node["nodes"] = [self._node(k, recursive, top=False) for k in children]
        return node

    def _get(self, request: Request, key: str, recursive: bool) -> bytes:
        self._headers(request)
        if key != "/" and key not in self._keys and key not in self._dirs:
            return self._error(request, 404, 100, "Key not found", key)
        node = self._node(key, recursive, top=True)
        return json.dumps({"action": "get", "node": node}).encode()

    def _wait(self, request: Request, key: str, index: int) -> bytes | int:
        self._headers(request)
        if self._history and len(self._history) == self._history.maxlen:
            oldest = self._history[0].index
            if index < oldest:
                return self._error(
                    request,
                    400,
                    401,
                    "The event in requested index is outdated and cleared",
                    f"the requested history has been cleared [{oldest}/{index}]",
                )
        for event in self._history:
            if event.index >= index and event.matches(key):
                return event.body()
        waiter = _Waiter(request, key, index)
        self._waiters.append(waiter)
        request.write(b"")

        def gone(reason: object) -> None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._hung_up(reason)

        request.notifyFinish().addErrback(gone)
        return NOT_DONE_YET

    def _record(self, event: _Event) -> None:
        self._history.append(event)
        for waiter in list(self._waiters):
            if event.index >= waiter.index and event.matches(waiter.prefix):
                self._waiters.remove(waiter)
                waiter.request.write(event.body())
                waiter.request.finish()


def _hang_up(request: Request) -> None:
    transport = request.channel.transport
    assert transport is not None
    transport.loseConnection()


def _arg(request: Request, name: bytes) -> str | None:
    values = request.args.get(name) if request.args else None
    return values[0].decode() if values else None
