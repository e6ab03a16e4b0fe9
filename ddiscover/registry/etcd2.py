"""A client for etcd's v2 keys API: one recursive listing, or one long-poll wait, at a time.

Requests go through :class:`~ddiscover.registry.client.EtcdHTTP`, so every one is bounded twice
on the injected clock: treq's ``timeout=`` until the response headers arrive, and a timer on the
body, because etcd sends a wait's headers at once and its body only when an event happens.  A
listing's body gets the request timeout, a wait's the (longer) watch timeout.  Cancelling a call
never leaves a socket or a timer behind.

Errors are one-line :class:`RegistryError` subclasses naming the endpoint.  After a
:class:`RegistryUnavailable` the next call, of this client or of anything sharing its
``EtcdHTTP``, goes to the next endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from hyperlink import URL
from twisted.web import http

from ddiscover.registry.client import EtcdHTTP, HTTPClientLike, etcd_index
from ddiscover.registry.decoding import (
    body_text,
    decode_listing,
    decode_object,
    field,
    text_field,
)
from ddiscover.registry.errors import (
    IndexCleared,
    MalformedError,
    RegistryError,
    RegistryUnavailable,
)
from ddiscover.registry.layout import Entry
from ddiscover.registry.values import DELETE_ACTIONS, Change, ChangeHandler, Reply, Snapshot
from ddiscover.text import clip

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
_ERRORCODE_KEY_NOT_FOUND = 100
"""etcd v2 ``errorCode`` of a key that does not exist (HTTP 404)."""
_ERRORCODE_INDEX_CLEARED = 401
"""etcd v2 ``errorCode`` of a wait older than the kept history (HTTP 400)."""


def _entry(node: Mapping[str, Any]) -> Entry:
    ttl = node.get("ttl")
    return Entry(
        value=field(node, "value", str),
        modified_index=field(node, "modifiedIndex", int),
        ttl=ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
    )


def _leaves(top: Mapping[str, Any], into: dict[str, Entry]) -> None:
    """Add every leaf at or below ``top`` to ``into``.

    The walk keeps its own stack, so a deep tree is never a ``RecursionError``.
    """
    pending = [top]
    while pending:
        node = pending.pop()
        if not node.get("dir"):
            into[field(node, "key", str)] = _entry(node)
            continue
        # etcd's root directory has no "key" field, so a directory's key is only for messages.
        where = node.get("key", "/")
        where = clip(where) if isinstance(where, str) else "a directory"
        children = node.get("nodes", [])
        if not isinstance(children, list):
            raise MalformedError(f"'nodes' of {where} is not a list")
        for child in reversed(children):
            if not isinstance(child, dict):
                raise MalformedError(f"a child of {where} is not an object")
            pending.append(child)


def parse_listing(index: int, body: bytes) -> Snapshot:
    """Turn the body of a recursive GET into a :class:`Snapshot` of every leaf key."""
    node = decode_listing(body).get("node")
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
    if action not in _SET_ACTIONS | DELETE_ACTIONS:
        raise MalformedError(f"unknown action {clip(action)!r}")
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
        return None, body_text(body)
    code = error.get("errorCode")
    text, cause = text_field(error, "message"), text_field(error, "cause")
    if cause:
        text += f" ({cause})"
    return (code if isinstance(code, int) and not isinstance(code, bool) else None), text


class EtcdV2Client:
    """Reads the keys under one prefix from etcd v2, through ``etcd``.

    Failover, basic auth and body limits are :class:`EtcdHTTP`'s; this class knows the
    listing and wait calls and their JSON.  It holds no state of its own: the caller decides
    what to list and which index to wait from.
    """

    def __init__(self, etcd: EtcdHTTP, prefix: str, watch_timeout: float) -> None:
        self._etcd = etcd
        self._path = ("v2", "keys", *(s for s in prefix.split("/") if s))
        self._watch_timeout = watch_timeout

    @property
    def endpoint(self) -> URL:
        """The endpoint the next request goes to: the last one that worked, or the next to try."""
        return self._etcd.endpoint

    @property
    def api(self) -> str:
        """Always ``"v2"``."""
        return "v2"

    def _fail(self, endpoint: URL, reply: Reply) -> RegistryError:
        """The error for a reply that is not a success."""
        code, text = _error_code(reply.body)
        problem = f"HTTP {reply.code}" + (f" errorCode {code}" if code is not None else "")
        if text:
            problem += f": {text}"
        if reply.code >= 500:
            return self._etcd.unavailable(endpoint, problem, code)
        if code == _ERRORCODE_INDEX_CLEARED:
            return IndexCleared(endpoint, problem, code)
        return RegistryError(endpoint, problem, code)

    async def snapshot(self) -> Snapshot:
        """List every key under the prefix (an absent prefix is an empty listing)."""
        timeout = self._etcd.request_timeout
        endpoint, response = await self._etcd.send(
            "GET", self._path, query=(("recursive", "true"),)
        )
        body = await self._etcd.body_within(endpoint, response, timeout)
        if body is None:
            raise self._etcd.unavailable(endpoint, f"listing not received within {timeout:g}s")
        reply = Reply(response.code, etcd_index(response), body)
        if reply.code == http.NOT_FOUND and _error_code(reply.body)[0] == _ERRORCODE_KEY_NOT_FOUND:
            if reply.etcd_index is None:
                raise self._etcd.unavailable(endpoint, "no X-Etcd-Index header")
            return Snapshot(index=reply.etcd_index, entries={})
        if reply.code != 200:
            raise self._fail(endpoint, reply)
        if reply.etcd_index is None:
            raise self._etcd.unavailable(endpoint, "no X-Etcd-Index header")
        try:
            return parse_listing(reply.etcd_index, reply.body)
        except MalformedError as e:
            raise self._etcd.unavailable(endpoint, f"bad listing: {e}") from None

    async def wait(self, index: int) -> Change | None:
        """Wait for the first change under the prefix at ``index`` or later.

        ``None`` means nothing happened within the watch timeout (or etcd ended the wait
        empty): wait again from the same index, or from past :meth:`_wait`'s ``quiet_to``.
        """
        return (await self._wait(index)).change

    async def _wait(self, index: int) -> _Waited:
        query = (("wait", "true"), ("recursive", "true"), ("waitIndex", str(index)))
        endpoint, response = await self._etcd.send("GET", self._path, query=query)
        headers_index = etcd_index(response)
        if response.code == 200 and headers_index is not None and headers_index < index - 1:
            # Checked on the headers, which etcd sends at once: a wait from an index the
            # store has not reached would otherwise hang until the watch timeout, each time.
            self._etcd.discard(response)
            raise IndexCleared(
                endpoint,
                f"the etcd index went back to {headers_index} from at least {index - 1}"
                " (etcd restored from a backup, or a fresh member?)",
            )
        body = await self._etcd.body_within(endpoint, response, self._watch_timeout)
        reply = Reply(response.code, headers_index, b"" if body is None else body)
        if reply.code != 200:
            if body is None:
                raise self._etcd.unavailable(endpoint, f"HTTP {reply.code} body not received")
            raise self._fail(endpoint, reply)
        if not reply.body.strip():
            return _Waited(None, reply.etcd_index)
        try:
            return _Waited(parse_event(reply.body), None)
        except MalformedError as e:
            raise self._etcd.unavailable(endpoint, f"bad event: {e}") from None

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """One long-poll from ``index``: report its change, if one came, to ``on_changes``.

        A wait that ends without an event still reports how far it got: etcd registered it
        at the reply's X-Etcd-Index, and would have answered from its history had any key
        under the prefix changed from ``index`` up to that index.  So the next wait starts
        past it, and a quiet prefix on a busy cluster keeps up with the index instead of
        falling out of etcd's 1000-event history and re-listing (errorCode 401) each time.
        An index lower than one already seen means etcd lost its data: :class:`IndexCleared`.
        """
        waited = await self._wait(index)
        if waited.change is not None:
            on_changes([waited.change], waited.change.index)
        elif waited.quiet_to is not None and waited.quiet_to >= index:
            on_changes([], waited.quiet_to)


@attrs.frozen
class _Waited:
    """How a wait ended: with a change, or quiet up to an index (if the reply gave one)."""

    change: Change | None
    quiet_to: int | None
