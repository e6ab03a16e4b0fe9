"""Building pools of numbered servers for the balancing tests."""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from ddiscover.catalog import Address, Backend
from ddiscover.policy.values import Balance
from ddiscover.proxy.balance.member import ServerSpec
from ddiscover.proxy.balance.pool import Pool


def backend(name: str) -> Backend:
    """A backend whose id is ``name``, on an address derived from it."""
    return Backend(name, Address("10.0.0.1", 10000 + sum(map(ord, name)) % 50000))


def pool(
    balance: Balance = Balance.ROUNDROBIN,
    *,
    weights: dict[str, int] | None = None,
    backups: tuple[str, ...] = (),
    clock: Clock | None = None,
    seed: int = 1,
    up: bool = True,
    **options: float,
) -> Pool:
    """A pool of the named servers (weight 1 unless given), all UP unless ``up`` is false."""
    made = Pool(clock or Clock(), random.Random(seed), balance, **options)  # type: ignore[arg-type]
    names = weights or {"a": 1, "b": 1, "c": 1}
    specs = [ServerSpec(backend(n), w) for n, w in names.items()]
    specs += [ServerSpec(backend(n), 1, backup=True) for n in backups]
    made.update(specs)
    if up:
        for spec in specs:
            made.set_up(spec.backend, True)
    return made


def picks(target: Pool, count: int, client: str = "") -> str:
    """The ids of ``count`` picks, each session released at once."""
    chosen = []
    for _ in range(count):
        member = target.pick(client)
        assert member is not None
        chosen.append(member.backend.id)
        target.release(member)
    return "".join(chosen)
