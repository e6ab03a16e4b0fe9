"""A client for etcd's v2 keys API: one recursive listing, or one long-poll wait, at a time.

Every request is bounded twice on the injected clock: treq's ``timeout=`` until the response
headers arrive, and our own timer on the body, because etcd sends a wait's headers at once and
its body only when an event happens.  The body is read by :class:`BodyReader`, which aborts the
connection when the body is too slow, too big, or no longer wanted; cancelling a call therefore
never leaves a socket or a timer behind.

Errors are one-line :class:`RegistryError` subclasses naming the endpoint.  After a
:class:`RegistryUnavailable` the client moves on to the next endpoint for the following call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hyperlink import URL
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from ddiscover.registry.client import (
    NETWORK_ERRORS,
    BodyReader,
    BodyTooLargeError,
    Change,
    ChangeHandler,
    HeadersTimeoutError,
    HTTPClientLike,
    IndexCleared,
    MalformedError,
    RegistryError,
    RegistryUnavailable,
    Reply,
    Snapshot,
    decode_object,
    describe,
    etcd_index,
    field,
    one_line,
    tell_timeout_from_cancel,
)
from ddiscover.registry.layout import Entry

__all__ = [
    "Change",
    "EtcdV2Client",
    "HTTPClientLike",
    "IndexCleared",
    "RegistryError",
    "RegistryUnavailable",
    "Snapshot",
    "parse_event",
    "parse_listing",
]

_SET_ACTIONS = frozenset({"set", "create", "update", "compareAndSwap"})
_DELETE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})
_KEY_NOT_FOUND = 100
_INDEX_CLEARED = 401


def _entry(node: Mapping[str, Any]) -> Entry:
    ttl = node.get("ttl")
    return Entry(
        value=field(node, "value", str),
        modified_index=field(node, "modifiedIndex", int),
        ttl=ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
    )


def _leaves(node: Mapping[str, Any], into: dict[str, Entry]) -> None:
    """Add every leaf at or below ``node`` to ``into``."""
    if node.get("dir"):
        # etcd's root directory has no "key" field, so a directory's key is only for messages.
        where = node.get("key", "/")
        children = node.get("nodes", [])
        if not isinstance(children, list):
            raise MalformedError(f"'nodes' of {where} is not a list")
        for child in children:
            if not isinstance(child, dict):
                raise MalformedError(f"a child of {where} is not an object")
            _leaves(child, into)
    else:
        into[field(node, "key", str)] = _entry(node)


def parse_listing(index: int, body: bytes) -> Snapshot:
    """Turn the body of a recursive GET into a :class:`Snapshot` of every leaf key."""
    node = decode_object(body).get("node")
    if not isinstance(node, dict):
        raise MalformedError("no 'node' object")
    entries: dict[str, Entry] = {}
    _leaves(node, entries)
    return Snapshot(index=index, entries=entries)


def parse_event(body: bytes) -> Change:
    """Turn the body of a wait into the :class:`Change` it reports."""
    event = decode_object(body)
    action = field(event, "action", str)
    node = event.get("node")
    if not isinstance(node, dict):
        raise MalformedError("no 'node' object")
    if action not in _SET_ACTIONS | _DELETE_ACTIONS:
        raise MalformedError(f"unknown action {action!r}")
    is_dir = bool(node.get("dir"))
    return Change(
        action=action,
        key=field(node, "key", str),
        is_dir=is_dir,
        entry=_entry(node) if action in _SET_ACTIONS and not is_dir else None,
        index=field(node, "modifiedIndex", int),
    )


def _error_code(body: bytes) -> tuple[int | None, str]:
    """etcd's ``errorCode`` and a one-line message from an error body, if it has them."""
    try:
        error = decode_object(body)
    except MalformedError:
        return None, one_line(body[:200].decode("utf-8", "replace"))
    code = error.get("errorCode")
    text = str(error.get("message") or "")
    if error.get("cause"):
        text += f" ({error['cause']})"
    return (code if isinstance(code, int) else None), one_line(text)


class EtcdV2Client:
    """Reads the keys under one prefix from etcd v2, failing over between ``endpoints``.

    It holds no state but the endpoint in use: the caller decides what to list and which index
    to wait from.  ``headers`` go on every request (basic auth, when etcd's v2 auth is on).
    """

    def __init__(  # noqa: PLR0917 (app.py passes the collaborators positionally)
        self,
        http: HTTPClientLike,
        clock: IReactorTime,
        endpoints: Sequence[URL],
        prefix: str,
        request_timeout: float,
        watch_timeout: float,
        max_body: int = 64 * 1024 * 1024,
        headers: Headers | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self._http = http
        self._clock = clock
        self._endpoints = tuple(endpoints)
        self._current = 0
        self._segments = tuple(s for s in prefix.split("/") if s)
        self._request_timeout = request_timeout
        self._watch_timeout = watch_timeout
        self._max_body = max_body
        self._headers = headers or Headers()

    @property
    def endpoint(self) -> URL:
        """The endpoint the next request goes to: the last one that worked, or the next to try."""
        return self._endpoints[self._current]

    @property
    def api(self) -> str:
        """Always ``"v2"``."""
        return "v2"

    def _keys_url(self, endpoint: URL, **query: str) -> str:
        url = endpoint.child("v2", "keys", *self._segments)
        return url.replace(query=tuple(query.items())).to_uri().to_text()

    async def _get(self, url: str, body_timeout: float) -> Reply | None:
        """GET ``url``; ``None`` when the body did not finish within ``body_timeout``."""
        endpoint = self.endpoint
        requested = self._http.request(
            "GET",
            url,
            data=None,
            headers=self._headers,
            timeout=self._request_timeout,
            unbuffered=True,
            reactor=self._clock,
        )
        try:
            response: IResponse = await tell_timeout_from_cancel(requested)
        except HeadersTimeoutError:
            raise self._unavailable(
                endpoint, f"no response within {self._request_timeout:g}s"
            ) from None
        except NETWORK_ERRORS as e:
            raise self._unavailable(endpoint, describe(e)) from None
        reader = BodyReader(self._max_body)
        response.deliverBody(reader)
        try:
            body = await reader.done.addTimeout(body_timeout, self._clock)
        except DeferredTimeoutError:
            return None
        except BodyTooLargeError:
            raise self._unavailable(
                endpoint, f"response body is over {self._max_body} bytes"
            ) from None
        except NETWORK_ERRORS as e:
            raise self._unavailable(endpoint, f"response cut off: {describe(e)}") from None
        return Reply(response.code, etcd_index(response), body)

    def _unavailable(self, endpoint: URL, problem: str) -> RegistryUnavailable:
        """Note that ``endpoint`` failed, so the next call tries the next one."""
        if self.endpoint == endpoint:
            self._current = (self._current + 1) % len(self._endpoints)
        return RegistryUnavailable(endpoint, problem)

    def _fail(self, endpoint: URL, reply: Reply) -> RegistryError:
        """The error for a reply that is not a success."""
        code, text = _error_code(reply.body)
        problem = f"HTTP {reply.code}" + (f" errorCode {code}" if code is not None else "")
        if text:
            problem += f": {text}"
        if reply.code >= 500:
            return self._unavailable(endpoint, problem)
        if code == _INDEX_CLEARED:
            return IndexCleared(endpoint, problem)
        return RegistryError(endpoint, problem)

    async def snapshot(self) -> Snapshot:
        """List every key under the prefix (an absent prefix is an empty listing)."""
        endpoint = self.endpoint
        reply = await self._get(self._keys_url(endpoint, recursive="true"), self._request_timeout)
        if reply is None:
            raise self._unavailable(
                endpoint, f"listing not received within {self._request_timeout:g}s"
            )
        if reply.code == 404 and _error_code(reply.body)[0] == _KEY_NOT_FOUND:
            if reply.etcd_index is None:
                raise self._unavailable(endpoint, "no X-Etcd-Index header")
            return Snapshot(index=reply.etcd_index, entries={})
        if reply.code != 200:
            raise self._fail(endpoint, reply)
        if reply.etcd_index is None:
            raise self._unavailable(endpoint, "no X-Etcd-Index header")
        try:
            return parse_listing(reply.etcd_index, reply.body)
        except MalformedError as e:
            raise self._unavailable(endpoint, f"bad listing: {e}") from None

    async def wait(self, index: int) -> Change | None:
        """Wait for the first change under the prefix at ``index`` or later.

        ``None`` means nothing happened within the watch timeout (or etcd ended the wait
        empty): wait again from the same index.
        """
        endpoint = self.endpoint
        url = self._keys_url(endpoint, wait="true", recursive="true", waitIndex=str(index))
        reply = await self._get(url, self._watch_timeout)
        if reply is None:
            return None
        if reply.code != 200:
            raise self._fail(endpoint, reply)
        if not reply.body.strip():
            return None
        try:
            return parse_event(reply.body)
        except MalformedError as e:
            raise self._unavailable(endpoint, f"bad event: {e}") from None

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """One long-poll from ``index``: report its change, if one came, to ``on_changes``."""
        change = await self.wait(index)
        if change is not None:
            on_changes([change], change.index)
