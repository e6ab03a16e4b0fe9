"""What a registry client reports, whatever its API: snapshots, changes, and the client protocol.

These are plain values and one :class:`typing.Protocol`, so the watch loop, the stats and the
tests can use them without importing the HTTP or TLS stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs
from hyperlink import URL

from ddiscover.registry.layout import Entry

DELETE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})
"""The v2 actions that take a key away."""


@attrs.frozen
class Snapshot:
    """Every leaf key under the prefix, and the etcd index (v3: revision) it was taken at."""

    index: int
    entries: Mapping[str, Entry]


@attrs.frozen
class Change:
    """One change to one key; ``entry`` is the new value for set-like actions, else ``None``.

    v2 actions are etcd's (``set``, ``expire``, ...); v3 ones are ``put`` and ``delete``.
    """

    action: str
    key: str
    is_dir: bool
    entry: Entry | None
    index: int

    @property
    def removes(self) -> bool:
        """Whether the change took ``key`` away (delete, expire or compareAndDelete)."""
        return self.action in DELETE_ACTIONS


ChangeHandler = Callable[[Sequence[Change], int], None]
"""Called with the changes of one etcd revision (possibly none: a progress notification) and
the index the watch has now reached; the next watch starts one past it."""


class RegistryClient(Protocol):
    """What the watch loop needs from an etcd client, whatever its API."""

    @property
    def endpoint(self) -> URL:
        """The endpoint in use."""

    @property
    def api(self) -> str:
        """``"v2"`` or ``"v3"`` (``"auto"`` until detected), for the logs and the page."""

    async def snapshot(self) -> Snapshot:
        """List every key under the prefix."""

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """Report changes from ``index`` on until the stream goes quiet for the watch timeout.

        Raises :class:`~ddiscover.registry.errors.IndexCleared` when etcd no longer has
        ``index``, and :class:`~ddiscover.registry.errors.RegistryError` when the stream fails.
        """


@attrs.frozen
class Reply:
    """A complete response: status, X-Etcd-Index (if any) and body."""

    code: int
    etcd_index: int | None
    body: bytes
