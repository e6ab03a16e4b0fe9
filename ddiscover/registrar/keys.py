"""What the registrar keeps in etcd, and how each etcd API keeps it alive.

:class:`Registration` names the two keys of the layout ddiscover reads (``docs/registry.md``).
:class:`V2Keeper` writes them with a TTL refreshed by ``refresh=true`` writes (which wake no
watcher); :class:`V3Keeper` puts them on one lease kept alive by ``lease/keepalive``.  A key or
lease that is gone (etcd lost it, or it expired while etcd was unreachable) is written again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Protocol

import attrs

from ddiscover._log import make_logger
from ddiscover.catalog import Address
from ddiscover.registry.client import EtcdHTTP, RegistryError, b64
from ddiscover.text import clip

log = make_logger()

_HTTP_NOT_FOUND = HTTPStatus.NOT_FOUND
"""v2 answers a write with ``prevExist=true`` or a delete of a missing key with HTTP 404."""
_GRPC_NOT_FOUND = 5
"""The gRPC code v3 gives ``lease/revoke`` for a lease that no longer exists."""


@attrs.frozen
class Registration:
    """What to keep in etcd: one backend of one service, and the service's listen port."""

    prefix: str
    service: str
    id: str
    address: Address
    port: int
    ttl: int

    @property
    def id_key(self) -> str:
        """``<prefix>/<service>/<id>``."""
        return f"{self.prefix}/{self.service}/{self.id}"

    @property
    def port_key(self) -> str:
        """``<prefix>/<service>/port``."""
        return f"{self.prefix}/{self.service}/port"

    def values(self) -> dict[str, str]:
        """Each key and the value it must hold, the port key first.

        ddiscover rejects a backend of a service that has no port key, so writing the id key
        first would make every new service log a transient "no port key" error.
        """
        return {self.port_key: str(self.port), self.id_key: str(self.address)}


class Keeper(Protocol):
    """Writes one registration with one etcd API."""

    async def register(self) -> None:
        """Write every key, with a fresh TTL or lease."""

    async def refresh(self) -> None:
        """Extend the keys' life, writing them again if they are gone."""

    async def deregister(self) -> None:
        """Remove the keys now."""


def _segments(key: str) -> tuple[str, ...]:
    return ("v2", "keys", *(s for s in key.split("/") if s))


class V2Keeper:
    """Keys with a TTL, refreshed without an event; deleted on deregistration."""

    def __init__(self, etcd: EtcdHTTP, registration: Registration) -> None:
        self._etcd = etcd
        self._registration = registration

    async def _write(
        self, key: str, query: tuple[tuple[str, str], ...], form: dict[str, str]
    ) -> int:
        reply = await self._etcd.call("PUT", _segments(key), query=query, data=form)
        if reply.code not in (200, 201, _HTTP_NOT_FOUND):
            raise RegistryError(self._etcd.endpoint, f"writing {key}: HTTP {reply.code}")
        return reply.code

    async def register(self) -> None:
        """Plain ``set`` of both keys with the TTL."""
        ttl = str(self._registration.ttl)
        for key, value in self._registration.values().items():
            await self._write(key, (), {"value": value, "ttl": ttl})

    async def refresh(self) -> None:
        """``refresh=true`` each key; if one expired meanwhile, register again."""
        ttl = str(self._registration.ttl)
        for key in self._registration.values():
            code = await self._write(
                key, (("refresh", "true"), ("prevExist", "true")), {"ttl": ttl}
            )
            if code == _HTTP_NOT_FOUND:
                await self.register()
                return

    async def deregister(self) -> None:
        """Delete both keys (one already gone is fine)."""
        for key in self._registration.values():
            reply = await self._etcd.call("DELETE", _segments(key))
            if reply.code not in (200, _HTTP_NOT_FOUND):
                raise RegistryError(self._etcd.endpoint, f"deleting {key}: HTTP {reply.code}")


def _whole(value: object) -> int | None:
    """A whole number from a v3 JSON reply (which spells int64 as a string), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


class V3Keeper:
    """Both keys on one lease; keepalive refreshes it, revoking it deletes them at once."""

    def __init__(self, etcd: EtcdHTTP, registration: Registration) -> None:
        self._etcd = etcd
        self._registration = registration
        self.lease: int | None = None

    async def register(self) -> None:
        """Grant a lease and put both keys on it in one transaction."""
        reply = await self._etcd.v3("lease/grant", {"TTL": self._registration.ttl})
        lease = _whole(reply.get("ID"))
        if not lease:
            raise RegistryError(
                self._etcd.endpoint,
                f"lease/grant returned no lease ID, got {clip(repr(reply.get('ID')))}",
            )
        self.lease = lease
        puts = [
            {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}
            for key, value in self._registration.values().items()
        ]
        await self._etcd.v3("kv/txn", {"success": puts})

    async def refresh(self) -> None:
        """Keep the lease alive; a keepalive without a TTL means it is gone: register again."""
        if self.lease is None:
            await self.register()
            return
        reply = await self._etcd.v3("lease/keepalive", {"ID": str(self.lease)})
        result = reply.get("result")
        if not isinstance(result, dict) or (_whole(result.get("TTL")) or 0) <= 0:
            log.info(
                "lease {lease} is gone; registering {key} again",
                lease=self.lease,
                key=self._registration.id_key,
            )
            self.lease = None
            await self.register()

    async def deregister(self) -> None:
        """Revoke the lease, which deletes both keys in one revision."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            await self._etcd.v3("lease/revoke", {"ID": str(lease)})
        except RegistryError as e:
            if e.code != _GRPC_NOT_FOUND:
                raise


KeeperFactory = Callable[[EtcdHTTP, Registration], Keeper]

KEEPERS: Mapping[str, KeeperFactory] = {"v2": V2Keeper, "v3": V3Keeper}
"""The keeper of each etcd API."""
