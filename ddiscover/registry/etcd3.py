"""A client for etcd's v3 JSON gateway: one range of the prefix, or one watch stream.

Keys and values travel base64-encoded; 64-bit numbers come back as JSON strings
(``docs/etcd-http.md`` §3).  The prefix ``/backends`` is read as the range from ``/backends/`` to
``/backends0``, so ``/backends-x`` is not in it.

A watch is ``POST /v3/watch`` with the whole request in the body: etcd answers with a stream of
``{"result": ...}`` objects, one per line, which
:class:`~ddiscover.registry.watch_stream.WatchStream` splits on newlines (not on HTTP chunks).
The only way to end a watch over HTTP/1.1 is to close the connection, which is what cancelling,
a quiet stream (no message within the watch timeout), or a compaction all do.  A stream that
ends (etcd stopping sends a final ``{"error": ...}``, without a newline on 3.4) is
:class:`~ddiscover.registry.errors.RegistryUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs
from hyperlink import URL

from ddiscover.registry.client import EtcdHTTP
from ddiscover.registry.decoding import b64, text_field, unb64
from ddiscover.registry.errors import (
    BodyTooLargeError,
    IndexCleared,
    MalformedError,
    RegistryError,
    one_line,
)
from ddiscover.registry.failures import NETWORK_ERRORS, describe
from ddiscover.registry.layout import Entry, normalise_prefix
from ddiscover.registry.values import Change, ChangeHandler, Snapshot
from ddiscover.registry.watch_stream import MAX_WATCH_MESSAGE, StreamEndedError, WatchStream
from ddiscover.text import clip

_INT64 = re.compile(r"-?[0-9]{1,20}")


def prefix_range(prefix: str) -> tuple[str, str]:
    """The ``key`` and ``range_end`` holding every key under ``prefix`` (and nothing beside it)."""
    start = normalise_prefix(prefix) + "/"
    return start, start[:-1] + chr(ord(start[-1]) + 1)


def _int(obj: Mapping[str, Any], name: str, default: int | None = None) -> int:
    """A 64-bit field, which the gateway sends as a string; ``default`` if left out."""
    value = obj.get(name)
    if value is None and default is not None:
        return default
    # isdigit() would let "²" through, which int() refuses; 20 digits hold any int64.
    if isinstance(value, str) and _INT64.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise MalformedError(f"field {name!r} is missing or not a number")


def _object(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise MalformedError(f"no {name!r} object")
    return value


def _list(obj: Mapping[str, Any], name: str) -> list[Any]:
    value = obj.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MalformedError(f"{name!r} is not a list of objects")
    return value


def parse_range(reply: Mapping[str, Any]) -> Snapshot:
    """Turn a ``kv/range`` reply into a :class:`Snapshot` at its header revision."""
    revision = _int(_object(reply, "header"), "revision")
    entries = {}
    for kv in _list(reply, "kvs"):
        entries[unb64(kv.get("key"))] = Entry(unb64(kv.get("value", "")), _int(kv, "mod_revision"))
    return Snapshot(index=revision, entries=entries)


def parse_events(result: Mapping[str, Any]) -> list[Change]:
    """The changes in one watch response: ``put`` with the new entry, or ``delete``."""
    changes = []
    for event in _list(result, "events"):
        kv = _object(event, "kv")
        key, revision = unb64(kv.get("key")), _int(kv, "mod_revision")
        if event.get("type", "PUT") == "DELETE":
            changes.append(Change("delete", key, False, None, revision))
        else:
            entry = Entry(unb64(kv.get("value", "")), revision)
            changes.append(Change("put", key, False, entry, revision))
    return changes


class EtcdV3Client:
    """Reads the keys under one prefix from etcd's v3 gateway, through ``etcd``.

    Failover, authentication and body limits are :class:`EtcdHTTP`'s; this class knows the
    range and watch calls and their JSON.
    """

    def __init__(self, etcd: EtcdHTTP, prefix: str, watch_timeout: float) -> None:
        self._etcd = etcd
        self._start, self._end = prefix_range(prefix)
        self._watch_timeout = watch_timeout

    @property
    def endpoint(self) -> URL:
        """The endpoint the next request goes to."""
        return self._etcd.endpoint

    @property
    def api(self) -> str:
        """Always ``"v3"``."""
        return "v3"

    async def snapshot(self) -> Snapshot:
        """Range over the prefix: every key, at one revision."""
        endpoint = self._etcd.endpoint
        reply = await self._etcd.v3(
            "kv/range", {"key": b64(self._start), "range_end": b64(self._end)}
        )
        try:
            return parse_range(reply)
        except MalformedError as e:
            raise self._etcd.unavailable(endpoint, f"bad range reply: {e}") from None

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """Stream changes from revision ``index`` until the stream is quiet for the timeout.

        The request asks for a progress report at once (``progress_request``), so a quiet
        stream still learns how far the store has got: when it ends quiet, the watch reports
        that revision, and the next one starts past it instead of replaying (and, once etcd
        compacts, losing) the history of unrelated keys.  The report is held until the end
        because etcd 3.4.23 (Debian's) answers ``progress_request`` *before* the catch-up
        events of a watcher that is not synced yet (measured); trusting it at once would skip
        those events if the stream were cut between the two.  etcd's own periodic progress
        notifications (``progress_notify``, every 10 minutes by default) are reported as they
        come.  An expired token is fetched again and the watch repeated once.

        Raises :class:`IndexCleared` when ``index`` was compacted away.
        """
        create = {
            "key": b64(self._start),
            "range_end": b64(self._end),
            "start_revision": index,
            "progress_notify": True,
        }
        endpoint, response = await self._etcd.open_v3(
            "watch", {"create_request": create}, {"progress_request": {}}
        )
        progress = _Progress(reached=index - 1)

        def on_message(message: dict[str, Any]) -> None:
            self._message(endpoint, index, message, on_changes, progress)

        limit = min(self._etcd.max_body, MAX_WATCH_MESSAGE)
        stream = WatchStream(self._etcd.clock, self._watch_timeout, limit, on_message)
        response.deliverBody(stream)
        try:
            await stream.done
        except BodyTooLargeError:
            raise self._etcd.unavailable(
                endpoint, f"a watch message is over {limit} bytes"
            ) from None
        except StreamEndedError:
            raise self._etcd.unavailable(endpoint, "watch stream ended") from None
        except MalformedError as e:
            raise self._etcd.unavailable(endpoint, f"bad watch message: {e}") from None
        except NETWORK_ERRORS as e:
            raise self._etcd.unavailable(endpoint, f"watch cut off: {describe(e)}") from None
        if progress.vouched is not None and progress.vouched > progress.reached:
            on_changes([], progress.vouched)

    def _message(
        self,
        endpoint: URL,
        index: int,
        message: Mapping[str, Any],
        on_changes: ChangeHandler,
        progress: _Progress,
    ) -> None:
        """Act on one watch message; raising ends the stream with that error."""
        if "error" in message:
            error = message["error"]
            text = text_field(error, "message") if isinstance(error, dict) else ""
            if not text:
                text = clip(one_line(error)) if isinstance(error, str) else "no reason given"
            raise self._etcd.unavailable(endpoint, f"watch ended: {text}")
        result = _object(message, "result")
        if result.get("canceled"):
            if "compact_revision" in result:
                oldest = _int(result, "compact_revision")
                raise IndexCleared(
                    endpoint, f"revision {index} is compacted (oldest kept: {oldest})"
                )
            self._etcd.forget_token()
            reason = text_field(result, "cancel_reason")
            raise RegistryError(endpoint, f"watch canceled: {reason}")
        if result.get("created"):
            return
        changes = parse_events(result)
        if changes:
            reached = max(c.index for c in changes)
        elif "header" in result:
            reached = _int(_object(result, "header"), "revision")
            if result.get("watch_id") in _PROGRESS_REPLY_IDS:
                progress.vouched = reached
                return
        else:
            return
        if changes or reached >= index:
            progress.reached = max(progress.reached, reached)
            on_changes(changes, reached)


_PROGRESS_REPLY_IDS = ("-1", -1)
"""The ``watch_id`` of the reply to a ``progress_request`` (a periodic notification has none)."""


@attrs.define
class _Progress:
    """How far one watch stream has reported, and the revision a progress reply vouched for."""

    reached: int
    vouched: int | None = None
