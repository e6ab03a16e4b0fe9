"""The measured workloads, by name."""

from __future__ import annotations

import argparse
from typing import Any

from bench.harness.backends import Backends
from bench.harness.proxies import Instance
from bench.scenarios.memory import idle_burst
from bench.scenarios.throughput import run_iperf, run_wrk

THROUGHPUT = ("bulk1", "bulk4", "keepalive", "close")
ALL_WORKLOADS = (*THROUGHPUT, "slow", "idle")


def run_workload(
    workload: str, inst: Instance, args: argparse.Namespace, backends: Backends
) -> dict[str, Any]:
    if workload == "bulk1":
        return run_iperf(inst.ports["bulk"], args.duration, 1, args.omit)
    if workload == "bulk4":
        return run_iperf(inst.ports["bulk"], args.duration, 4, args.omit)
    if workload == "keepalive":
        return run_wrk(inst.ports["http"], args.duration, close=False)
    if workload == "close":
        return run_wrk(inst.ports["http"], args.duration, close=True)
    if workload == "idle":
        return idle_burst(inst, backends, args.idle_conns, args.settle)
    raise ValueError(workload)
