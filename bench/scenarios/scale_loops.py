"""The loops of the scale scenario, each run as its own process so none slows another.

``scale_loops.py MODE SECONDS ARGS...`` runs one loop for ``SECONDS`` (or until SIGTERM) and
prints one JSON object on stdout:

* ``lag HOST PORT PATH INTERVAL``: GET ``PATH`` on one keep-alive connection every INTERVAL s;
  the round-trip times sample the proxy's event-loop lag from outside.
* ``request HOST PORT0 COUNT INTERVAL``: a new connection through the proxy to one of COUNT
  services in turn (``PING``, read the echo to EOF) every INTERVAL s; latency and failures.
* ``scrape HOST PORT INTERVAL PATH...``: GET every PATH every INTERVAL s; durations, sizes, and
  the ``ddiscover_process_loop_lag_seconds`` lines of the first and last ``/metrics``.
* ``writer ETCD_URL KEYS_JSON MODE PERIOD TTL``: re-write every v2 key of KEYS_JSON (a list of
  ``[key, value]``) once per PERIOD s, spread evenly, with ``ttl=TTL``: MODE ``set`` writes the
  value (one watch event per key), ``refresh`` sends ``refresh=true`` (no event).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

LAG_METRIC = "ddiscover_process_loop_lag_seconds"
#: How long a probe waits for an answer: long, so that a stalled reactor shows as a long
#: round trip (and never as a pile of abandoned requests it still has to serve).
STALL = 120.0


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """n, p50, p99 and max of ``values`` (nearest rank), None when empty."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]

    return {"n": len(ordered), "p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1]}


def histogram_quantiles(before: list[str], after: list[str]) -> dict[str, Any]:
    """p50/p99 upper bounds of a Prometheus histogram between two scrapes of its lines."""

    def buckets(lines: list[str]) -> dict[float, float]:
        out = {}
        for line in lines:
            if "_bucket{" in line and 'le="' in line:
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float(le)] = float(line.rsplit(" ", 1)[1])
        return out

    first, last = buckets(before), buckets(after)
    delta = sorted((le, last[le] - first.get(le, 0.0)) for le in last)
    if not delta or delta[-1][1] <= 0:
        return {"samples": 0}
    total = delta[-1][1]
    result: dict[str, Any] = {"samples": total}
    for name, q in (("p50_le_s", 0.5), ("p99_le_s", 0.99)):
        result[name] = next(le for le, n in delta if n >= q * total)
    over = [le for le, n in delta if n < total]
    result["max_gt_s"] = over[-1] if over else 0.0  # the largest bound some sample exceeded
    return result


class Stop:
    """Set by SIGTERM or when ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.flag = False
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_: object) -> None:
        self.flag = True

    def __bool__(self) -> bool:
        return self.flag or time.monotonic() >= self.deadline


def _paced(stop: Stop, interval: float, step: Callable[[], None]) -> None:
    """Call ``step`` every ``interval`` s (never two at once; a late step is not made up)."""
    due = time.monotonic()
    while not stop:
        step()
        due += interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            due = time.monotonic()


def lag_loop(stop: Stop, host: str, port: int, path: str, interval: float) -> dict[str, Any]:
    rtts: list[float] = []
    errors = 0
    conn = http.client.HTTPConnection(host, port, timeout=STALL)

    def step() -> None:
        nonlocal conn, errors
        start = time.perf_counter()
        try:
            conn.request("GET", path)
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=STALL)
            return
        rtts.append((time.perf_counter() - start) * 1000)

    _paced(stop, interval, step)
    return {"rtt_ms": percentiles(rtts), "errors": errors}


def request_loop(stop: Stop, host: str, port0: int, count: int, interval: float) -> dict:
    times: list[float] = []
    failures = 0
    turn = 0

    def step() -> None:
        nonlocal failures, turn
        port = port0 + turn % count
        turn += 1
        start = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=STALL) as s:
                s.sendall(b"PING\n")
                data = b""
                while more := s.recv(64):
                    data += more
        except OSError:
            failures += 1
            return
        if data != b"PING\n":
            failures += 1
            return
        times.append((time.perf_counter() - start) * 1000)

    _paced(stop, interval, step)
    return {"latency_ms": percentiles(times), "failures": failures, "ok": len(times)}


def scrape_loop(stop: Stop, host: str, port: int, interval: float, paths: list[str]) -> dict:
    durations: dict[str, list[float]] = {p: [] for p in paths}
    sizes: dict[str, int] = {}
    errors = 0
    lag_lines: list[list[str]] = []

    def step() -> None:
        nonlocal errors
        for path in paths:
            if stop:
                return
            start = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(host, port, timeout=STALL)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                conn.close()
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            durations[path].append((time.perf_counter() - start) * 1000)
            sizes[path] = len(body)
            if path == "/metrics":
                lines = [
                    ln for ln in body.decode(errors="replace").splitlines()
                    if ln.startswith(LAG_METRIC)
                ]  # fmt: skip
                lag_lines[min(1, len(lag_lines)) :] = [lines]  # the first and the last

    _paced(stop, interval, step)
    lag = histogram_quantiles(lag_lines[0], lag_lines[-1]) if lag_lines and lag_lines[0] else {}
    return {
        "duration_ms": {p: percentiles(v) for p, v in durations.items()},
        "bytes": sizes,
        "errors": errors,
        "loop_lag_metric": lag,
        "loop_lag_lines": lag_lines[-1][:40] if lag_lines else [],
    }


def v2_write(conn: http.client.HTTPConnection, key: str, form: dict[str, str]) -> int:
    """One v2 PUT on a keep-alive connection; the HTTP status."""
    conn.request(
        "PUT",
        "/v2/keys/" + urllib.parse.quote(key.lstrip("/")),
        body=urllib.parse.urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    response.read()
    return response.status


def writer_loop(
    stop: Stop, url: str, keys: list[list[str]], *, mode: str, period: float, ttl: int
) -> dict:
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=10)
    writes = failures = late = 0
    start = time.monotonic()
    interval = period / max(1, len(keys))
    due = start
    while not stop:
        key, value = keys[writes % len(keys)]
        form = {"value": value, "ttl": str(ttl)}
        if mode == "refresh":
            form = {"ttl": str(ttl), "refresh": "true", "prevExist": "true"}
        try:
            status = v2_write(conn, key, form)
            if status >= 300:
                failures += 1
        except (OSError, http.client.HTTPException):
            failures += 1
            conn.close()
            conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
        writes += 1
        due += interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif pause < -1.0:
            late += 1
            due = time.monotonic()
    elapsed = time.monotonic() - start
    return {
        "mode": mode,
        "writes": writes,
        "failures": failures,
        "rate_per_s": writes / max(elapsed, 1e-9),
        "wanted_per_s": len(keys) / period,
        "fell_behind": late,
    }


def main(argv: list[str]) -> int:
    mode, seconds, rest = argv[0], float(argv[1]), argv[2:]
    stop = Stop(seconds)
    if mode == "lag":
        result = lag_loop(stop, rest[0], int(rest[1]), rest[2], float(rest[3]))
    elif mode == "request":
        result = request_loop(stop, rest[0], int(rest[1]), int(rest[2]), float(rest[3]))
    elif mode == "scrape":
        result = scrape_loop(stop, rest[0], int(rest[1]), float(rest[2]), rest[3:])
    elif mode == "writer":
        with open(rest[1]) as f:
            keys = json.load(f)
        result = writer_loop(
            stop, rest[0], keys, mode=rest[2], period=float(rest[3]), ttl=int(rest[4])
        )
    else:
        raise SystemExit(f"unknown loop {mode!r}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
