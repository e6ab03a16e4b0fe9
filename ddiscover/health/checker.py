"""The health checker: one TCP connect check per backend address, every ``interval`` seconds.

Health is keyed by address, not by registry key, so a backend that re-registers under a new
key keeps its state.  The balancer asks :meth:`HealthChecker.is_up` at pick time; the proxy
feeds its own failed connects back through :meth:`HealthChecker.report`.  State changes are
logged in haproxy's words, one line per service and backend id that use the address.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Address, Catalog
from ddiscover.health.probe import EndpointFactory, connect_check
from ddiscover.health.result import CheckResult
from ddiscover.health.state import HealthRecord, discovered, next_record

Subscriber = Callable[[Address, HealthRecord, HealthRecord], None]
"""Called with ``(address, old, new)`` whenever an address goes UP or DOWN."""

_DOWN = (
    "Server {service}/{server} is DOWN, reason: {reason}, check duration: {duration}ms. "
    "{active} active and 0 backup servers left. "
    "0 sessions active, 0 requeued, 0 remaining in queue."
)
_DOWN_WITH_INFO = (
    'Server {service}/{server} is DOWN, reason: {reason}, info: "{info}", '
    "check duration: {duration}ms. {active} active and 0 backup servers left. "
    "0 sessions active, 0 requeued, 0 remaining in queue."
)
_UP = (
    "Server {service}/{server} is UP, reason: {reason}, check duration: {duration}ms. "
    "{active} active and 0 backup servers online. 0 sessions requeued, 0 total in queue."
)


def _uniform_jitter(limit: float) -> float:
    """A delay spread evenly over ``[0, limit]``, so registrations in a burst check apart."""
    return random.uniform(0, limit)


class _Loop:
    """The checks of one address: a jittered first check, then one every ``interval``.

    ``LoopingCall`` waits for the Deferred a tick returns, so a check still connecting delays
    the next one and checks never overlap.  Once stopped, a check that settles late (the
    cancelled connect does, at once) is not counted.
    """

    def __init__(
        self,
        clock: IReactorTime,
        check: Callable[[], Coroutine[Any, Any, CheckResult]],
        count: Callable[[CheckResult], None],
        crashed: Callable[[Failure], None],
    ) -> None:
        self._clock = clock
        self._check = check
        self._count = count
        self._crashed = crashed
        self._call = LoopingCall(self._tick)
        self._call.clock = clock
        self._first: IDelayedCall | None = None
        self._inflight: Deferred[None] | None = None
        self._stopped = False

    def start(self, delay: float, interval: float) -> None:
        """Check first after ``delay`` seconds, then every ``interval`` seconds."""
        self._first = self._clock.callLater(delay, self._begin, interval)

    def stop(self) -> None:
        """Stop checking, cancelling the connect under way; leaves no delayed call behind."""
        self._stopped = True
        if self._first is not None:
            self._first.cancel()
            self._first = None
        if self._call.running:
            self._call.stop()
        if self._inflight is not None:
            self._inflight.cancel()

    def _begin(self, interval: float) -> None:
        """Run the first check now and start the loop; a loop that dies is a bug, logged."""
        self._first = None
        self._call.start(interval, now=True).addErrback(self._crashed)

    def _tick(self) -> Deferred[None]:
        """One check, as the Deferred ``LoopingCall`` waits on; kept so ``stop`` can cancel it."""
        checking = Deferred.fromCoroutine(self._run())
        if not checking.called:
            self._inflight = checking
        return checking

    async def _run(self) -> None:
        """Run the check and count its result, unless the loop was stopped meanwhile."""
        try:
            result = await self._check()
        except (CancelledError, ConnectingCancelledError):
            return  # stop() cancelled the check under way
        finally:
            self._inflight = None
        if not self._stopped:
            self._count(result)


class HealthChecker(Service):
    """Active TCP checks and passive failure reports, folded into one rise/fall record per address.

    A newly discovered address is DOWN until its first successful check (see
    :func:`ddiscover.health.state.discovered`).  A removed address stops being checked but its
    record is kept for ``retire_after`` seconds, and is resumed if the address comes back.
    """

    log = make_logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint_for: EndpointFactory,
        *,
        interval: float,
        rise: int,
        fall: int,
        connect_timeout: float,
        jitter: Callable[[float], float] = _uniform_jitter,
        retire_after: float = 300.0,
    ) -> None:
        if interval <= 0 or connect_timeout <= 0:
            raise ValueError(
                f"interval {interval} and connect_timeout {connect_timeout} must be positive"
            )
        self._clock = clock
        self._endpoint_for = endpoint_for
        self._interval = interval
        self._rise = rise
        self._fall = fall
        self._timeout = min(connect_timeout, interval)
        self._jitter = jitter
        self._retire_after = retire_after
        self._catalog = Catalog()
        self._records: dict[Address, HealthRecord] = {}
        self._loops: dict[Address, _Loop] = {}
        self._retired: dict[Address, tuple[float, HealthRecord]] = {}
        self._subscribers: list[Subscriber] = []
        self._local_errors = False

    def startService(self) -> None:
        """Start checking every address of the last reconciled catalog."""
        super().startService()
        for address in sorted(self._records):
            self._start_loop(address)

    def stopService(self) -> None:
        """Stop every check loop and cancel the connects under way; records are kept."""
        super().stopService()
        for loop in self._loops.values():
            loop.stop()
        self._loops.clear()

    def reconcile(self, catalog: Catalog) -> None:
        """Check exactly the addresses in ``catalog``: start new ones, retire removed ones.

        Retired records older than ``retire_after`` are dropped here, lazily.
        """
        now = self._clock.seconds()
        wanted = catalog.addresses()
        self._catalog = catalog
        for address in sorted(self._records.keys() - wanted):
            loop = self._loops.pop(address, None)
            if loop is not None:
                loop.stop()
            self._retired[address] = (now, self._records.pop(address))
        self._retired = {
            address: (retired_at, record)
            for address, (retired_at, record) in self._retired.items()
            if now - retired_at < self._retire_after
        }
        for address in sorted(wanted - self._records.keys()):
            retired = self._retired.pop(address, None)
            self._records[address] = (
                retired[1] if retired else discovered(self._rise, self._fall, now)
            )
            if self.running:
                self._start_loop(address)

    def is_up(self, address: Address) -> bool:
        """Whether ``address`` may be routed to: in the catalog and UP."""
        record = self._records.get(address)
        return record is not None and record.is_up

    def is_pending(self, address: Address) -> bool:
        """Whether ``address`` is in the catalog and has not had a counted result yet."""
        record = self._records.get(address)
        return record is not None and not record.checked

    def record(self, address: Address) -> HealthRecord | None:
        """The health record of an address in the catalog, or ``None``."""
        return self._records.get(address)

    def report(self, address: Address, result: CheckResult) -> None:
        """Count a proxied connect that failed exactly like a failed check.

        Successes are ignored, as with haproxy's ``observe layer4``: only checks raise health.
        Reports for addresses no longer in the catalog are ignored too.
        """
        if not result.ok and address in self._records:
            self._count(address, result)

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(address, old, new)`` on every UP<->DOWN change from now on."""
        self._subscribers.append(callback)

    def _start_loop(self, address: Address) -> None:
        """Start checking ``address``, first after a jittered tenth of the interval."""
        loop = _Loop(
            self._clock,
            partial(self._check, address),
            partial(self._count, address),
            partial(self._crashed, address),
        )
        loop.start(self._jitter(self._interval / 10), self._interval)
        self._loops[address] = loop

    async def _check(self, address: Address) -> CheckResult:
        """Connect to ``address`` once and say how it went; every failure becomes a result."""
        return await connect_check(self._endpoint_for(address, self._timeout), self._clock)

    def _count(self, address: Address, result: CheckResult) -> None:
        """Fold a check or reported result into the address's record; log and notify changes."""
        if not result.counts:
            self._local_error(address, result)
            return
        if self._local_errors:
            self._local_errors = False
            self.log.info("Connects get through again; local socket errors are over")
        old = self._records[address]
        new = next_record(old, result, self._clock.seconds())
        self._records[address] = new
        if new.is_up != old.is_up or not old.checked:
            self._log_state(address, old, new)
        if new.is_up != old.is_up:
            self._notify(address, old, new)

    def _local_error(self, address: Address, result: CheckResult) -> None:
        """Warn once per run of ``SOCKERR`` results: they are ours, not the backends' fault."""
        if self._local_errors:
            return
        self._local_errors = True
        self.log.warn(
            'Connect to {address} failed on our side, info: "{info}"; local socket errors '
            "are not counted against backends and are not logged again until a connect "
            "gets through",
            address=address,
            info=result.info,
            status=result.status.value,
        )

    def _log_state(self, address: Address, old: HealthRecord, new: HealthRecord) -> None:
        """Log ``new`` once per (service, backend id) at ``address``, in haproxy's words."""
        result = new.last
        assert result is not None
        for name, service in sorted(self._catalog.services.items()):
            servers = sorted(b.id for b in service.backends if b.address == address)
            if not servers:
                continue
            active = sum(1 for b in service.backends if self.is_up(b.address))
            fields = {
                "service": name,
                "active": active,
                "address": address,
                "status": result.status.value,
                "reason": result.status.description,
                "info": result.info,
                "duration": round(result.duration * 1000),
            }
            for server in servers:
                if new.is_up:
                    self.log.info(_UP, server=server, **fields)
                else:
                    self.log.warn(
                        _DOWN_WITH_INFO if result.info else _DOWN, server=server, **fields
                    )
            if old.is_up and not active:
                self.log.error("service {service} has no server available!", service=name)

    def _notify(self, address: Address, old: HealthRecord, new: HealthRecord) -> None:
        """Tell every subscriber; one that raises is logged and does not stop the others."""
        for callback in list(self._subscribers):
            try:
                callback(address, old, new)
            except Exception:
                self.log.failure(
                    "Health subscriber {callback!r} failed on {address}",
                    callback=callback,
                    address=address,
                )

    def _crashed(self, address: Address, failure: Failure) -> None:
        """Log the bug that stopped the checks of ``address``, with its traceback."""
        self.log.failure(
            "Health checks of {address} stopped by a bug", failure=failure, address=address
        )
