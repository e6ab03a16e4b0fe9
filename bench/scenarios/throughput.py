"""Throughput and latency workloads: wrk (HTTP) and iperf3 (bulk TCP)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any


def run_wrk(port: int, duration: int, close: bool) -> dict[str, Any]:
    argv = ["wrk", "-t1", "-c64", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/128.bin")
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    return parse_wrk(out)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    result: dict[str, Any] = {"rps": float(rps.group(1))}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    result["errors"] = sum(map(int, errors.groups())) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def run_iperf(port: int, duration: int, streams: int, omit: int) -> dict[str, Any]:
    argv = [
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        str(duration),
        "-P",
        str(streams),
        "-J",
    ]
    if omit:
        argv += ["-O", str(omit)]
    last = ""
    for _attempt in range(4):  # a health check landing in iperf3's setup can fail a test
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + omit + 30, check=False
        )
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = {"error": proc.stdout[-500:] + proc.stderr[-500:]}
        if "error" not in data:
            end = data["end"]
            return {
                "gbps": end["sum_received"]["bits_per_second"] / 1e9,
                "retransmits": end.get("sum_sent", {}).get("retransmits", 0),
            }
        last = str(data["error"])
        time.sleep(1.0)
    raise RuntimeError(f"iperf3 failed 4 times: {last}")
