"""The health checker: one TCP connect check per backend address, every ``interval`` seconds.

Health is keyed by address, not by registry key, so a backend that re-registers under a new
key keeps its state.  The balancer asks :meth:`HealthChecker.is_up` at pick time; the proxy
feeds its own failed connects back through :meth:`HealthChecker.report`.  State changes are
logged in haproxy's words, one line per service and backend id that use the address.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from functools import partial

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Address, Catalog
from ddiscover.health.loop import Backoff, CheckLoop, default_backoff
from ddiscover.health.placement import Placement
from ddiscover.health.probe import EndpointFactory, check_address
from ddiscover.health.result import CheckResult
from ddiscover.health.schedule import CheckSchedule, Jitter
from ddiscover.health.state import HealthRecord, discovered, next_record, resumed

Subscriber = Callable[[Address, HealthRecord, HealthRecord], None]
"""Called with ``(address, old, new)`` on an address's first result (``old.checked`` is
False) and whenever it goes UP or DOWN."""

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
    """A delay spread evenly over ``[0, limit]``, so checks of many addresses run apart."""
    return random.uniform(0, limit)


class HealthChecker(Service):
    """Active TCP checks and passive failure reports, folded into one rise/fall record per address.

    A newly discovered address is DOWN until its first successful check (see
    :func:`ddiscover.health.state.discovered`).  A removed address stops being checked but its
    record is kept for ``retire_after`` seconds; if the address comes back it resumes its
    counters but not its verdict (:func:`ddiscover.health.state.resumed`): nothing proves the
    new registration listens yet.  When to check is :class:`CheckSchedule`'s business; each
    address's loop is a :class:`CheckLoop`, which a bug cannot stop (the address is not
    routable while its loop backs off).
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
        jitter: Jitter = _uniform_jitter,
        retire_after: float = 300.0,
        first_check_rate: float = 1000.0,
        backoff: Backoff = default_backoff,
    ) -> None:
        if interval <= 0 or connect_timeout <= 0:
            raise ValueError(
                f"interval {interval} and connect_timeout {connect_timeout} must be positive"
            )
        self._clock = clock
        self._endpoint_for = endpoint_for
        self._schedule = CheckSchedule(interval, first_check_rate)
        self._rise = rise
        self._fall = fall
        self._timeout = min(connect_timeout, interval)
        self._jitter = jitter
        self._backoff = backoff
        self._retire_after = retire_after
        self._placement = Placement()
        self._records: dict[Address, HealthRecord] = {}
        self._loops: dict[Address, CheckLoop] = {}
        self._broken: set[Address] = set()
        # In the order retired, hence of expiry: expired ones are popped from the front.
        self._retired: dict[Address, tuple[float, HealthRecord]] = {}
        self._subscribers: list[Subscriber] = []
        self._local_errors = False

    def startService(self) -> None:
        """Start checking every address of the last reconciled catalog."""
        super().startService()
        self._start_loops(sorted(self._records))

    def stopService(self) -> None:
        """Stop every check loop and cancel the connects under way; records are kept."""
        super().stopService()
        for loop in self._loops.values():
            loop.stop()
        self._loops.clear()
        self._broken.clear()

    def reconcile(self, catalog: Catalog) -> None:
        """Check exactly the addresses in ``catalog``: start new ones, retire removed ones.

        Takes time proportional to the services that changed (compared by identity).
        Retired records older than ``retire_after`` are dropped here, lazily.
        """
        now = self._clock.seconds()
        moves = self._placement.update(catalog, self._record_up)
        for address in sorted(moves.removed):
            loop = self._loops.pop(address, None)
            if loop is not None:
                loop.stop()
            self._broken.discard(address)
            self._retired.pop(address, None)
            self._retired[address] = (now, self._records.pop(address))
        for address, (retired_at, _record) in list(self._retired.items()):
            if now - retired_at < self._retire_after:
                break
            del self._retired[address]
        added = sorted(moves.added)
        for address in added:
            retired = self._retired.pop(address, None)
            self._records[address] = (
                resumed(retired[1], now) if retired else discovered(self._rise, self._fall, now)
            )
        if self.running:
            self._start_loops(added)

    def is_up(self, address: Address) -> bool:
        """Whether ``address`` may be routed to: in the catalog, UP, and its checks running."""
        return self._record_up(address) and address not in self._broken

    def is_pending(self, address: Address) -> bool:
        """Whether ``address`` is in the catalog and still waits for its first result."""
        record = self._records.get(address)
        return record is not None and not record.checked and address not in self._broken

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
        """Call ``callback(address, old, new)`` on every first result and UP<->DOWN change."""
        self._subscribers.append(callback)

    def _record_up(self, address: Address) -> bool:
        record = self._records.get(address)
        return record is not None and record.is_up

    def _start_loops(self, addresses: Iterable[Address]) -> None:
        """Start checking ``addresses``, their first checks spread over a window they share."""
        batch = list(addresses)
        for address in batch:
            loop = CheckLoop(
                self._clock,
                partial(self._check, address),
                partial(self._count, address),
                partial(self._crashed, address),
                partial(self._broken.discard, address),
                backoff=self._backoff,
            )
            self._loops[address] = loop
            loop.start(self._schedule.delays(len(batch), self._jitter))

    async def _check(self, address: Address) -> CheckResult:
        """Connect to ``address`` once and say how it went; every failure becomes a result."""
        return await check_address(self._endpoint_for, address, self._timeout, self._clock)

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
        if new.is_up != old.is_up:
            self._placement.changed(address, new.is_up)
        if new.is_up != old.is_up or not old.checked:
            self._log_state(address, old, new)
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
        for name, servers in self._placement.uses(address):
            active = self._placement.active(name)
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

    def _crashed(self, address: Address, failure: Failure, retry_in: float) -> None:
        """Log the bug that interrupted the checks of ``address``; it is DOWN until they resume."""
        self._broken.add(address)
        self.log.failure(
            "Health checks of {address} interrupted by a bug; the address is not routed "
            "and its checks resume in {retry_in}s",
            failure=failure,
            address=address,
            retry_in=retry_in,
        )
