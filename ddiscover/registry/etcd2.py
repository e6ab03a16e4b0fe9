"""A client for etcd's v2 keys API: one recursive listing, or one long-poll wait, at a time.

Every request is bounded twice on the injected clock: treq's ``timeout=`` until the response
headers arrive, and our own timer on the body, because etcd sends a wait's headers at once and
its body only when an event happens.  The body is read by :class:`_BodyReader`, which aborts the
connection when the body is too slow, too big, or no longer wanted; cancelling a call therefore
never leaves a socket or a timer behind.

Errors are one-line :class:`RegistryError` subclasses naming the endpoint.  After a
:class:`RegistryUnavailable` the client moves on to the next endpoint for the following call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionClosed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from ddiscover.registry.layout import Entry

_SET_ACTIONS = frozenset({"set", "create", "update", "compareAndSwap"})
_DELETE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})
_KEY_NOT_FOUND = 100
_INDEX_CLEARED = 401

# What the network, not our code, can make a request fail with.
_NETWORK_ERRORS = (
    ConnectError,
    ConnectionClosed,
    ResponseFailed,
    RequestTransmissionFailed,
    OSError,
)


class HTTPClientLike(Protocol):
    """The part of :class:`treq.client.HTTPClient` this client uses (``StubTreq`` has it too)."""

    def get(
        self,
        url: str,
        /,
        *,
        timeout: float | None,
        unbuffered: bool,
        # treq declares a whole reactor here but only calls ``callLater`` on it.
        reactor: Any,
    ) -> Deferred[Any]:
        """Start a GET; the result provides :class:`~twisted.web.iweb.IResponse`."""


class RegistryError(Exception):
    """etcd could not be read; ``str()`` is one line naming the endpoint and the problem."""

    def __init__(self, endpoint: URL, problem: str) -> None:
        super().__init__(endpoint, problem)
        self.endpoint = endpoint
        self.problem = problem

    def __str__(self) -> str:
        return f"etcd {self.endpoint.to_text()}: {self.problem}"


class RegistryUnavailable(RegistryError):  # noqa: N818 (the name is the contract)
    """The endpoint did not answer usefully (refused, timed out, 5xx, cut off, not JSON)."""


class IndexCleared(RegistryError):  # noqa: N818 (the name is the contract)
    """The wait index is older than etcd's event history (errorCode 401): list everything again."""


@attrs.frozen
class Snapshot:
    """Every leaf key under the prefix, and the etcd index the listing was taken at."""

    index: int
    entries: Mapping[str, Entry]


@attrs.frozen
class Change:
    """One event from a wait; ``entry`` is the new value for set-like actions, else ``None``."""

    action: str
    key: str
    is_dir: bool
    entry: Entry | None
    index: int

    @property
    def removes(self) -> bool:
        """Whether the event took ``key`` away (delete, expire or compareAndDelete)."""
        return self.action in _DELETE_ACTIONS


class _MalformedError(ValueError):
    """A response body etcd would not send; the message says what was wrong."""


class _BodyTooLargeError(Exception):
    """The body grew past the size cap, so the connection was aborted."""


@attrs.frozen
class _Reply:
    """A complete response: status, X-Etcd-Index (if any) and body."""

    code: int
    etcd_index: int | None
    body: bytes


class _BodyReader(TwistedProtocol):
    """Collects a response body up to ``limit`` bytes into :attr:`done`.

    Cancelling :attr:`done` (directly, or through ``addTimeout``) aborts the connection, which
    is the only way to stop a long-poll whose headers have already arrived.
    """

    def __init__(self, limit: int) -> None:
        self.done: Deferred[bytes] = Deferred(self._abort)
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []

    def _abort(self, _: Deferred[bytes]) -> None:
        IPushProducer(self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done.errback(_BodyTooLargeError())
            self._abort(self.done)
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(error: BaseException) -> str:
    """A short description of a network failure, looking inside Twisted's wrapper exceptions."""
    if isinstance(error, ResponseFailed | RequestTransmissionFailed) and error.reasons:
        inner = "; ".join(_one_line(r.getErrorMessage()) or r.type.__name__ for r in error.reasons)
        return f"{type(error).__name__}: {inner}"
    return _one_line(str(error)).rstrip(".") or type(error).__name__


class _HeadersTimeoutError(Exception):
    """treq cancelled the request because no response headers came within its timeout."""


def _was_cancelled(failure: Failure) -> bool:
    """Whether a request failed because it was cancelled, at whatever stage it was in."""
    if failure.check(CancelledError, ConnectingCancelledError):
        return True
    error = failure.value
    return isinstance(error, ResponseFailed | RequestTransmissionFailed) and any(
        reason.check(CancelledError) for reason in error.reasons
    )


def _tell_timeout_from_cancel(requested: Deferred[Any]) -> Deferred[Any]:
    """Wrap ``requested`` so treq's header timeout is told apart from the caller's cancel.

    Both cancel the same Deferred.  Through the wrapper, the caller's cancel stays a
    ``CancelledError`` and treq's becomes :class:`_HeadersTimeoutError`.
    """
    by_caller = False

    def cancel(_: Deferred[Any]) -> None:
        nonlocal by_caller
        by_caller = True
        requested.cancel()

    outer: Deferred[Any] = Deferred(cancel)

    def settle(result: object) -> None:
        if outer.called:
            return
        if by_caller:
            outer.errback(CancelledError())
        elif isinstance(result, Failure):
            outer.errback(_HeadersTimeoutError() if _was_cancelled(result) else result)
        else:
            outer.callback(result)

    requested.addBoth(settle)
    return outer


def _etcd_index(response: IResponse) -> int | None:
    values = response.headers.getRawHeaders(b"x-etcd-index")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def _field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    """``obj[name]``, which must be a ``kind`` (and not a bool posing as an int)."""
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _MalformedError(f"field {name!r} is missing or not {kind.__name__}")
    return value


def _decode(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError as e:
        raise _MalformedError(f"not JSON ({_one_line(str(e))})") from None
    if not isinstance(decoded, dict):
        raise _MalformedError("not a JSON object")
    return decoded


def _entry(node: Mapping[str, Any]) -> Entry:
    ttl = node.get("ttl")
    return Entry(
        value=_field(node, "value", str),
        modified_index=_field(node, "modifiedIndex", int),
        ttl=ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
    )


def _leaves(node: Mapping[str, Any], into: dict[str, Entry]) -> None:
    """Add every leaf at or below ``node`` to ``into``."""
    if node.get("dir"):
        # etcd's root directory has no "key" field, so a directory's key is only for messages.
        where = node.get("key", "/")
        children = node.get("nodes", [])
        if not isinstance(children, list):
            raise _MalformedError(f"'nodes' of {where} is not a list")
        for child in children:
            if not isinstance(child, dict):
                raise _MalformedError(f"a child of {where} is not an object")
            _leaves(child, into)
    else:
        into[_field(node, "key", str)] = _entry(node)


def parse_listing(index: int, body: bytes) -> Snapshot:
    """Turn the body of a recursive GET into a :class:`Snapshot` of every leaf key."""
    node = _decode(body).get("node")
    if not isinstance(node, dict):
        raise _MalformedError("no 'node' object")
    entries: dict[str, Entry] = {}
    _leaves(node, entries)
    return Snapshot(index=index, entries=entries)


def parse_event(body: bytes) -> Change:
    """Turn the body of a wait into the :class:`Change` it reports."""
    event = _decode(body)
    action = _field(event, "action", str)
    node = event.get("node")
    if not isinstance(node, dict):
        raise _MalformedError("no 'node' object")
    if action not in _SET_ACTIONS | _DELETE_ACTIONS:
        raise _MalformedError(f"unknown action {action!r}")
    is_dir = bool(node.get("dir"))
    return Change(
        action=action,
        key=_field(node, "key", str),
        is_dir=is_dir,
        entry=_entry(node) if action in _SET_ACTIONS and not is_dir else None,
        index=_field(node, "modifiedIndex", int),
    )


def _error_code(body: bytes) -> tuple[int | None, str]:
    """etcd's ``errorCode`` and a one-line message from an error body, if it has them."""
    try:
        error = _decode(body)
    except _MalformedError:
        return None, _one_line(body[:200].decode("utf-8", "replace"))
    code = error.get("errorCode")
    text = str(error.get("message") or "")
    if error.get("cause"):
        text += f" ({error['cause']})"
    return (code if isinstance(code, int) else None), _one_line(text)


class EtcdV2Client:
    """Reads the keys under one prefix from etcd v2, failing over between ``endpoints``.

    It holds no state but the endpoint in use: the caller decides what to list and which index
    to wait from.
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

    @property
    def endpoint(self) -> URL:
        """The endpoint the next request goes to: the last one that worked, or the next to try."""
        return self._endpoints[self._current]

    def _keys_url(self, endpoint: URL, **query: str) -> str:
        url = endpoint.child("v2", "keys", *self._segments)
        return url.replace(query=tuple(query.items())).to_uri().to_text()

    async def _get(self, url: str, body_timeout: float) -> _Reply | None:
        """GET ``url``; ``None`` when the body did not finish within ``body_timeout``."""
        endpoint = self.endpoint
        requested = self._http.get(
            url, timeout=self._request_timeout, unbuffered=True, reactor=self._clock
        )
        try:
            response: IResponse = await _tell_timeout_from_cancel(requested)
        except _HeadersTimeoutError:
            raise self._unavailable(
                endpoint, f"no response within {self._request_timeout:g}s"
            ) from None
        except _NETWORK_ERRORS as e:
            raise self._unavailable(endpoint, _describe(e)) from None
        reader = _BodyReader(self._max_body)
        response.deliverBody(reader)
        try:
            body = await reader.done.addTimeout(body_timeout, self._clock)
        except DeferredTimeoutError:
            return None
        except _BodyTooLargeError:
            raise self._unavailable(
                endpoint, f"response body is over {self._max_body} bytes"
            ) from None
        except _NETWORK_ERRORS as e:
            raise self._unavailable(endpoint, f"response cut off: {_describe(e)}") from None
        return _Reply(response.code, _etcd_index(response), body)

    def _unavailable(self, endpoint: URL, problem: str) -> RegistryUnavailable:
        """Note that ``endpoint`` failed, so the next call tries the next one."""
        if self.endpoint == endpoint:
            self._current = (self._current + 1) % len(self._endpoints)
        return RegistryUnavailable(endpoint, problem)

    def _fail(self, endpoint: URL, reply: _Reply) -> RegistryError:
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
        except _MalformedError as e:
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
        except _MalformedError as e:
            raise self._unavailable(endpoint, f"bad event: {e}") from None
