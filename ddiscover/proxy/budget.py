"""How ddiscover shares its file descriptors: proxied connections, listeners and the rest.

Every proxied connection holds two descriptors (client and backend), and everything else
ddiscover does needs some too, so the open-files limit (raised to the hard limit at start)
is split once, at start, as haproxy derives its ``maxconn`` from ``ulimit -n``:

* a fixed reserve (:data:`FIXED_RESERVE`: stdio, the log, the poller, the etcd connections)
  and the stats server's cap on concurrent connections (:data:`STATS_CONNECTIONS`);
* an eighth of the rest for listening sockets, an eighth for health-check connects;
* what is left, halved, is the derived ``--maxconn``.

Worst-case memory per proxied connection, for sizing a container: up to one 256 KiB read
(:data:`ddiscover.proxy.fastpath.READ_SIZE`) plus the 64 KiB write buffer past which the
other side stops being read, in each direction: about 640 KiB, plus the kernel's socket
buffers.
"""

from __future__ import annotations

import attrs

#: Descriptors kept for stdio, the log, the poller, the etcd connections and a few spares.
FIXED_RESERVE = 16
#: The stats server's cap on concurrent connections.
STATS_CONNECTIONS = 32
#: Used when the limit is unlimited or unknown: Linux's default ``nr_open``.
UNLIMITED = 1 << 20


@attrs.frozen
class FdBudget:
    """The split of an open-files ``limit``; each share is a number of descriptors, except
    ``maxconn``, the proxied connections that fit in what is left (two each)."""

    limit: int
    listeners: int
    per_service: int
    checks: int
    maxconn: int


def fd_budget(limit: int) -> FdBudget:
    """Split ``limit`` descriptors (a negative or huge limit counts as :data:`UNLIMITED`).

    ``per_service`` caps the listeners of one registry service (a ``port`` key listing many
    ports) at a quarter of all listeners, and never below 16 while the total allows it.
    """
    if limit < 0 or limit > UNLIMITED:
        limit = UNLIMITED
    spare = max(0, limit - FIXED_RESERVE - STATS_CONNECTIONS)
    listeners = max(1, spare // 8)
    checks = spare // 8
    return FdBudget(
        limit=limit,
        listeners=listeners,
        per_service=min(listeners, max(16, listeners // 4)),
        checks=checks,
        maxconn=max(1, (spare - listeners - checks) // 2),
    )


def fit_maxconn(configured: int, budget: FdBudget) -> tuple[int, str | None]:
    """The ``--maxconn`` to use, and a one-line warning if the configured one cannot fit.

    ``0`` means derive it from the budget.  A configured value is kept even when it does not
    fit (the operator may know the load never gets there), but the warning says where
    connects and accepts will start failing.
    """
    if configured == 0:
        return budget.maxconn, None
    if configured <= budget.maxconn:
        return configured, None
    needed = budget.limit - budget.maxconn * 2 + configured * 2
    return configured, (
        f"--maxconn {configured} needs about {needed} file descriptors but the open-files "
        f"limit is {budget.limit}: beyond about {budget.maxconn} connections, accepts and "
        f"connects will fail; raise the limit (ulimit -n) or use --maxconn 0 to derive it"
    )
