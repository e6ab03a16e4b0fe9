"""Keep one backend registered in etcd while it is alive, and take it out when it stops.

Every ``ttl / 3`` seconds one cycle runs: check the local service if asked to, then register,
refresh or deregister (:mod:`ddiscover.registrar.keys` does the writes).  Stopping the service
(SIGTERM under twistd) deletes the keys, or revokes the lease, before the process exits.

The loop is supervised in the way of Twisted's ``ClientService``: its :attr:`Registrar.state`
is the step it is awaiting, derived from what it is doing rather than set next to it.  Any
exception but cancellation is logged once (etcd's own failures in one line, anything else with
its traceback), backed off, and followed by a fresh registration; a loop that ends anyway is
logged and started again.  There is no state in which it silently stopped.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Address
from ddiscover.health.probe import EndpointFactory, connect_check
from ddiscover.health.result import CheckResult, CheckStatus
from ddiscover.registrar.keys import KEEPERS, Keeper, KeeperFactory, Registration
from ddiscover.registry.api import choose_api
from ddiscover.registry.client import EtcdHTTP, RegistryError
from ddiscover.text import clip

log = make_logger()

_T = TypeVar("_T")


class RegistrarState(enum.Enum):
    """What the registrar is doing now."""

    STOPPED = "stopped"
    """Not started, or stopped and deregistered (or given up deregistering)."""
    CHOOSING_API = "choosing-api"
    """Asking the server which API it speaks (``--etcd-api auto``)."""
    CHECKING = "checking"
    """Asking ``--check`` whether the backend accepts connections."""
    REGISTERING = "registering"
    REFRESHING = "refreshing"
    DEREGISTERING = "deregistering"
    WAITING = "waiting"
    """Until the next cycle, ``ttl / 3`` after the last good one."""
    BACKING_OFF = "backing-off"
    """Until the retry after a failure."""
    STOPPING = "stopping"
    """Deregistering because the service is stopping."""


class Registrar(Service):
    """Runs the register/refresh cycle every ``ttl / 3`` seconds until stopped.

    ``api`` is ``"v2"``, ``"v3"`` or ``"auto"`` (asked of the server on the first cycle).  With
    ``check``, the backend is registered only while ``check`` accepts TCP connections.  After a
    failure the next attempt waits ``backoff(failures)`` seconds (Twisted's ``backoffPolicy``
    from 1 s, doubling), never longer than the cycle: the keys must be refreshed as soon as
    etcd can take them again.  ``keepers`` holds the keeper of each API.
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
        jitter: Callable[[], float] = random.random,
        keepers: Mapping[str, KeeperFactory] = KEEPERS,
    ) -> None:
        if check is not None and endpoint_for is None:
            raise ValueError("a check needs an endpoint factory")
        self._etcd = etcd
        self._clock = clock
        self._registration = registration
        self._api = api
        self._check = check
        self._endpoint_for = endpoint_for
        self._keepers = keepers
        self._keeper: Keeper | None = None
        self._loop: Deferred[None] | None = None
        self._restart: IDelayedCall | None = None
        self._step = RegistrarState.STOPPED
        self._stopping = False
        self._check_ok: bool | None = None
        self._last_bug: tuple[type[BaseException], str] | None = None
        self.registered = False
        self.failures = 0
        """Consecutive failed cycles; 0 after a good one."""
        self.interval = registration.ttl / 3
        self._backoff = backoffPolicy(min(1.0, self.interval), self.interval, 2.0, jitter)

    @property
    def state(self) -> RegistrarState:
        """The step the loop is awaiting; ``STOPPED`` when no loop runs."""
        if self._stopping:
            return RegistrarState.STOPPING
        if self._loop is None and self._restart is None:
            return RegistrarState.STOPPED
        return self._step

    def startService(self) -> None:
        """Start cycling; the first cycle runs at once."""
        super().startService()
        self._start_loop()

    def stopService(self) -> Deferred[None]:
        """Stop cycling and deregister; fires once the keys are gone (or that failed)."""
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
        restart, self._restart = self._restart, None
        if restart is not None and restart.active():
            restart.cancel()
        return Deferred.fromCoroutine(self._stop())

    def _start_loop(self) -> None:
        self._restart = None
        loop = self._loop = Deferred.fromCoroutine(self._run())
        loop.addErrback(self._loop_ended, loop)

    def _loop_ended(self, failure: Failure, loop: Deferred[None]) -> None:
        # _run catches everything it can; this is the supervisor's last line.  stopService
        # forgets the loop before cancelling it, so any other end, even a cancellation
        # nobody asked for, is a bug to log and recover from.
        if loop is not self._loop:
            return
        self._loop = None
        self.failures += 1
        delay = self._delay()
        log.failure(
            "the registrar loop ended on a bug; starting it again in {delay:g}s",
            failure=failure,
            delay=delay,
        )
        if self.running:
            self._step = RegistrarState.BACKING_OFF
            self._restart = self._clock.callLater(delay, self._start_loop)

    async def _doing(self, step: RegistrarState, work: Awaitable[_T]) -> _T:
        """Await ``work`` as ``step``: the one place :attr:`state` comes from."""
        self._step = step
        return await work

    def _delay(self) -> float:
        return min(self._backoff(max(0, self.failures - 1)), self.interval)

    async def _stop(self) -> None:
        # Deregister even when not known to be registered: a cancelled register may have
        # written some keys.
        if self._keeper is None:
            return
        self._stopping = True
        try:
            await self._keeper.deregister()
        except RegistryError as e:
            log.warn(
                "could not deregister {key}: {error}",
                key=self._registration.id_key,
                error=clip(str(e)),
            )
            return
        except Exception:
            log.failure("could not deregister {key}", key=self._registration.id_key)
            return
        finally:
            self._stopping = False
        self.registered = False
        log.info("deregistered {key}", key=self._registration.id_key)

    async def _run(self) -> None:
        while True:
            try:
                await self._cycle()
            except Exception:
                if not self.running:
                    raise  # cancelled by stopService, whichever error the cancel raised
                delay = self._failed(Failure())
                await self._doing(RegistrarState.BACKING_OFF, deferLater(self._clock, delay))
                continue
            self.failures = 0
            await self._doing(RegistrarState.WAITING, deferLater(self._clock, self.interval))

    def _failed(self, failure: Failure) -> float:
        """Log one failed cycle once; the delay before the next attempt."""
        self.failures += 1
        delay = self._delay()
        if failure.check(RegistryError):
            # etcd unreachable or refusing: one line; a refresh re-registers what is gone.
            log.warn(
                "{error}; trying again in {delay:g}s",
                error=clip(str(failure.value)),
                delay=delay,
            )
            return delay
        self.registered = False  # write every key again, not a refresh
        bug = (failure.type, str(failure.value))
        if bug == self._last_bug:  # its traceback is in the log already, once is enough
            log.warn(
                "registering {key} failed again ({error}); registering again in {delay:g}s",
                key=self._registration.id_key,
                error=clip(f"{failure.type.__name__}: {failure.value}"),
                delay=delay,
            )
            return delay
        self._last_bug = bug
        log.failure(
            "registering {key} failed on a bug; registering again in {delay:g}s",
            failure=failure,
            key=self._registration.id_key,
            delay=delay,
        )
        return delay

    async def _keeper_for_api(self) -> Keeper:
        if self._keeper is None:
            api = self._api
            if api == "auto":
                api = await self._doing(RegistrarState.CHOOSING_API, choose_api(self._etcd))
            self._keeper = self._keepers[api](self._etcd, self._registration)
        return self._keeper

    async def _probe(self) -> CheckResult:
        """Check ``--check`` once; any failure, of any kind, counts as unhealthy."""
        assert self._check is not None and self._endpoint_for is not None
        try:
            endpoint = self._endpoint_for(self._check, min(self.interval, 5.0))
            return await connect_check(endpoint, self._clock)
        except Exception as e:
            if not self.running:
                raise
            return CheckResult(CheckStatus.L4CON, str(e) or type(e).__name__, 0.0)

    async def _cycle(self) -> None:
        keeper = await self._keeper_for_api()
        key = self._registration.id_key
        if self._check is not None:
            result = await self._doing(RegistrarState.CHECKING, self._probe())
            was_ok, self._check_ok = self._check_ok, result.ok
            if not result.ok:
                if self.registered:
                    await self._doing(RegistrarState.DEREGISTERING, keeper.deregister())
                    self.registered = False
                    doing = "deregistered"
                elif was_ok is False:
                    return  # said so already
                else:
                    doing = "not registering"
                log.warn(
                    "{check} does not accept connections ({reason}); {doing} {key}",
                    check=str(self._check),
                    reason=clip(result.info or result.status.description),
                    doing=doing,
                    key=key,
                )
                return
        if self.registered:
            await self._doing(RegistrarState.REFRESHING, keeper.refresh())
            return
        await self._doing(RegistrarState.REGISTERING, keeper.register())
        self.registered = True
        log.info(
            "registered {key} = {value} (port {port}, ttl {ttl}s)",
            key=key,
            value=str(self._registration.address),
            port=self._registration.port,
            ttl=self._registration.ttl,
        )
