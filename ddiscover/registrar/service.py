"""Keep one backend registered in etcd while it is alive, and take it out when it stops.

The registrar writes the layout ddiscover reads (``docs/registry.md``)::

    <prefix>/<service>/<id>   = host:port     the backend
    <prefix>/<service>/port   = listen port   the port ddiscover listens on

and keeps both keys alive: on v2 with a TTL refreshed by ``refresh=true`` writes (which wake no
watcher), on v3 with a lease kept alive by ``lease/keepalive``.  A key or lease that is gone
(etcd lost it, or it expired while etcd was unreachable) is written again.  Every
``ttl / 3`` seconds one cycle runs: check the local service if asked to, then register, refresh
or deregister.  Stopping the service (SIGTERM under twistd) deletes the keys, or revokes the
lease, before the process exits.
"""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Address
from ddiscover.health.probe import EndpointFactory, connect_check
from ddiscover.registry.api import choose_api
from ddiscover.registry.client import EtcdHTTP, RegistryError, b64

log = make_logger()

_KEY_NOT_FOUND = 404
_LEASE_NOT_FOUND = 5


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
        """Each key and the value it must hold."""
        return {self.id_key: str(self.address), self.port_key: str(self.port)}


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
        if reply.code not in (200, 201, _KEY_NOT_FOUND):
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
            if code == _KEY_NOT_FOUND:
                await self.register()
                return

    async def deregister(self) -> None:
        """Delete both keys (one already gone is fine)."""
        for key in self._registration.values():
            reply = await self._etcd.call("DELETE", _segments(key))
            if reply.code not in (200, _KEY_NOT_FOUND):
                raise RegistryError(self._etcd.endpoint, f"deleting {key}: HTTP {reply.code}")


class V3Keeper:
    """Both keys on one lease; keepalive refreshes it, revoking it deletes them at once."""

    def __init__(self, etcd: EtcdHTTP, registration: Registration) -> None:
        self._etcd = etcd
        self._registration = registration
        self.lease: int | None = None

    async def register(self) -> None:
        """Grant a lease and put both keys on it in one transaction."""
        reply = await self._etcd.v3("lease/grant", {"TTL": self._registration.ttl})
        lease = int(reply.get("ID", 0))
        if not lease:
            raise RegistryError(self._etcd.endpoint, "lease/grant returned no lease ID")
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
        if not isinstance(result, dict) or int(result.get("TTL", 0)) <= 0:
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
            if e.code != _LEASE_NOT_FOUND:
                raise


class Registrar(Service):
    """Runs the register/refresh cycle every ``ttl / 3`` seconds until stopped.

    ``api`` is ``"v2"``, ``"v3"`` or ``"auto"`` (asked of the server on the first cycle).  With
    ``check``, the backend is registered only while ``check`` accepts TCP connections.
    """

    def __init__(
        self,
        etcd: EtcdHTTP,
        clock: IReactorTime,
        registration: Registration,
        api: str,
        *,
        check: Address | None = None,
        endpoint_for: EndpointFactory | None = None,
    ) -> None:
        if check is not None and endpoint_for is None:
            raise ValueError("a check needs an endpoint factory")
        self._etcd = etcd
        self._clock = clock
        self._registration = registration
        self._api = api
        self._check = check
        self._endpoint_for = endpoint_for
        self._keeper: Keeper | None = None
        self._running: Deferred[None] | None = None
        self.registered = False
        self.interval = registration.ttl / 3

    def startService(self) -> None:
        """Start cycling; the first cycle runs at once."""
        super().startService()
        self._running = Deferred.fromCoroutine(self._run())
        self._running.addErrback(self._crashed)

    def stopService(self) -> Deferred[None]:
        """Stop cycling and deregister; fires once the keys are gone (or that failed)."""
        super().stopService()
        running, self._running = self._running, None
        if running is not None:
            running.cancel()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # Deregister even when not known to be registered: a cancelled register may have
        # written some keys.
        if self._keeper is None:
            return
        try:
            await self._keeper.deregister()
        except RegistryError as e:
            log.warn(
                "could not deregister {key}: {error}", key=self._registration.id_key, error=str(e)
            )
            return
        self.registered = False
        log.info("deregistered {key}", key=self._registration.id_key)

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError, ConnectingCancelledError):
            log.failure("the registrar stopped on a bug", failure=failure)

    async def _run(self) -> None:
        while self.running:
            try:
                await self._cycle()
            except RegistryError as e:
                log.warn("{error}; trying again in {delay:g}s", error=str(e), delay=self.interval)
            await deferLater(self._clock, self.interval)

    async def _keeper_for_api(self) -> Keeper:
        if self._keeper is None:
            api = self._api
            if api == "auto":
                api = await choose_api(self._etcd)
            keeper = V2Keeper if api == "v2" else V3Keeper
            self._keeper = keeper(self._etcd, self._registration)
        return self._keeper

    async def _healthy(self) -> bool:
        if self._check is None or self._endpoint_for is None:
            return True
        endpoint = self._endpoint_for(self._check, min(self.interval, 5.0))
        return (await connect_check(endpoint, self._clock)).ok

    async def _cycle(self) -> None:
        keeper = await self._keeper_for_api()
        key = self._registration.id_key
        if not await self._healthy():
            if self.registered:
                await keeper.deregister()
                self.registered = False
                log.warn(
                    "{check} refuses connections; deregistered {key}",
                    check=str(self._check),
                    key=key,
                )
            return
        if self.registered:
            await keeper.refresh()
            return
        await keeper.register()
        self.registered = True
        log.info(
            "registered {key} = {value} (port {port}, ttl {ttl}s)",
            key=key,
            value=str(self._registration.address),
            port=self._registration.port,
            ttl=self._registration.ttl,
        )
