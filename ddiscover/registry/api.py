"""Choosing the etcd API: v2 where the server still answers ``/v2/keys``, else v3.

``--etcd-api auto`` asks the server once, on the first listing (never in a constructor), and
logs the answer; from then on every call goes to the chosen client.  etcd 3.4 without
``--enable-v2`` and every etcd from 3.6 answer ``/v2/keys`` with a plain-text 404.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hyperlink import URL
from twisted.internet.interfaces import IReactorTime

from ddiscover._log import make_logger
from ddiscover.registry.access import APIS, Credentials
from ddiscover.registry.client import EtcdHTTP, HTTPClientLike
from ddiscover.registry.decoding import decode_object
from ddiscover.registry.errors import MalformedError, RegistryUnavailable
from ddiscover.registry.etcd2 import EtcdV2Client
from ddiscover.registry.etcd3 import EtcdV3Client
from ddiscover.registry.values import ChangeHandler, RegistryClient, Snapshot

log = make_logger()

__all__ = ["APIS", "DetectingClient", "choose_api", "detect_api", "registry_client"]


async def detect_api(etcd: EtcdHTTP) -> str:
    """``"v2"`` if the current endpoint serves the v2 keys API, ``"v3"`` if it says 404."""
    reply = await etcd.call("GET", ("v2", "keys"))
    try:
        decode_object(reply.body)
    except MalformedError:
        if reply.code == 404:
            return "v3"
        raise etcd.unavailable(
            etcd.endpoint, f"cannot tell the etcd API: /v2/keys gave HTTP {reply.code}"
        ) from None
    return "v2"


async def choose_api(etcd: EtcdHTTP) -> str:
    """:func:`detect_api`, and log the answer: what ``--etcd-api auto`` does, once."""
    api = await detect_api(etcd)
    log.info(
        "etcd {endpoint} serves the {api} API; using it",
        endpoint=etcd.endpoint.to_text(),
        api=api,
    )
    return api


class DetectingClient:
    """A :class:`RegistryClient` that asks the server which API it speaks, then uses it."""

    def __init__(self, etcd: EtcdHTTP, v2: RegistryClient, v3: RegistryClient) -> None:
        self._etcd = etcd
        self._clients = {"v2": v2, "v3": v3}
        self._chosen: RegistryClient | None = None

    @property
    def endpoint(self) -> URL:
        """The endpoint in use."""
        return self._etcd.endpoint if self._chosen is None else self._chosen.endpoint

    @property
    def api(self) -> str:
        """The chosen API, or ``"auto"`` before the server has answered."""
        return "auto" if self._chosen is None else self._chosen.api

    async def snapshot(self) -> Snapshot:
        """Detect the API on the first call, then list with the chosen client."""
        if self._chosen is None:
            self._chosen = self._clients[await choose_api(self._etcd)]
        return await self._chosen.snapshot()

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """Watch with the chosen client (the watch loop always lists first)."""
        if self._chosen is None:
            raise RegistryUnavailable(self._etcd.endpoint, "watch before the API is known")
        await self._chosen.watch(index, on_changes)


def registry_client(
    api: str,
    http: HTTPClientLike,
    clock: IReactorTime,
    endpoints: Sequence[URL],
    prefix: str,
    *,
    request_timeout: float,
    watch_timeout: float,
    credentials: Credentials | None = None,
    forget_connections: Callable[[], object] = lambda: None,
) -> RegistryClient:
    """The client for ``api`` (``"auto"``, ``"v2"`` or ``"v3"``), built on ``http``.

    Detection and both clients share one :class:`EtcdHTTP`, so they share its failover too;
    ``forget_connections`` drops ``http``'s kept-alive connections after a failure.
    """
    etcd = EtcdHTTP(
        http,
        clock,
        endpoints,
        request_timeout=request_timeout,
        credentials=credentials,
        forget_connections=forget_connections,
    )
    v3 = EtcdV3Client(etcd, prefix, watch_timeout)
    v2 = EtcdV2Client(etcd, prefix, watch_timeout)
    if api == "auto":
        return DetectingClient(etcd, v2, v3)
    return v2 if api == "v2" else v3
