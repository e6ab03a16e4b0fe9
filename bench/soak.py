"""ddiscover's soak run: mixed load for many minutes while backends die and etcd restarts.

What it runs, all on loopback: a real etcd, ``twistd -n ddiscover`` (as the Dockerfile starts
it), three echo backends (``tests/integration/echo_server.py``), and, in this process, the
load: ``--keepalive`` clients that each keep one connection and echo a line every 20 ms, and
``--workers`` clients that each open a new connection per echo.  Meanwhile, every
``--cycle`` seconds one backend is SIGKILLed, deregistered, and replaced by a new process
registered under a new key; half-way through, etcd is SIGKILLed and restarted on its data.

Every client error is attributed: to a killed backend if the connection was greeted by a
backend that had been killed when the error happened, or if it failed before any greeting
within 0.5 s of a kill (it reached the backend just before the kill); else it counts as
unexplained (target 0).  ddiscover's RSS, open fds and live Python heap (allocated blocks
after a full collection, through ``bench/heapprobe``) are sampled every 10 s, to tell a leak
from memory the allocator merely keeps.  The summary is printed as JSON.

Usage: ``bench/soak [--minutes N]`` (10 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.etcd import EtcdProcess  # noqa: E402
from tests.integration.procfs import fd_kinds, open_fds, rss_kib  # noqa: E402
from tests.integration.support import entrypoint, environment, free_port  # noqa: E402

STEP_TIMEOUT = 5.0
KEEPALIVE_PAUSE = 0.02
SAMPLE_EVERY = 10.0
KILL_WINDOW = 0.5


class Backends:
    """The echo backend processes, each registered in etcd under its own key."""

    def __init__(self, etcd: EtcdProcess) -> None:
        self._etcd = etcd
        self.live: dict[str, subprocess.Popen[str]] = {}
        self.killed: dict[str, float] = {}
        self._started = 0

    def start(self) -> str:
        """Start one more backend and register it; its name."""
        self._started += 1
        name = f"b{self._started}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.echo_server", "echo", name],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=environment(),
        )
        assert process.stdout is not None
        port = int(process.stdout.readline())
        self.live[name] = process
        self._etcd.put(f"/backends/web/{name}", f"127.0.0.1:{port}")
        return name

    def kill(self, name: str) -> None:
        """SIGKILL a backend (its key stays until :meth:`deregister`)."""
        process = self.live.pop(name)
        self.killed[name] = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait()

    def deregister(self, name: str) -> None:
        self._etcd.delete(f"/backends/web/{name}")

    def stop(self) -> None:
        for process in self.live.values():
            process.send_signal(signal.SIGKILL)
            process.wait()


class Load:
    """The clients and what happened to them."""

    def __init__(self, port: int, backends: Backends) -> None:
        self._port = port
        self._backends = backends
        self.running = True
        self.echoes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.unexplained: list[str] = []

    def _error(self, kind: str, greeted_by: str, error: BaseException) -> None:
        now = time.monotonic()
        killed_at = self._backends.killed.get(greeted_by)
        if killed_at is not None and killed_at <= now:
            self.errors[f"{kind}: killed backend"] += 1
            return
        since_kill = min((now - t for t in self._backends.killed.values() if t <= now), default=-1)
        if not greeted_by and 0 <= since_kill <= KILL_WINDOW:
            # Connected to the backend just before it was killed, before its greeting came.
            self.errors[f"{kind}: killed backend before its greeting"] += 1
            return
        self.errors[f"{kind}: unexplained"] += 1
        self.unexplained.append(
            f"{kind} greeted by {greeted_by or '-'}, {since_kill:.2f}s after a kill: {error!r}"
        )

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self._port), STEP_TIMEOUT
        )
        name = await asyncio.wait_for(reader.readuntil(b"\n"), STEP_TIMEOUT)
        return reader, writer, name.decode().strip()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"soak\n")
        if await asyncio.wait_for(reader.readuntil(b"\n"), STEP_TIMEOUT) != b"soak\n":
            raise ValueError("wrong echo")

    async def keepalive(self) -> None:
        """One connection echoing every 20 ms; reconnects when it is cut."""
        while self.running:
            name = ""
            writer = None
            try:
                reader, writer, name = await self._connect()
                while self.running:
                    await self._echo(reader, writer)
                    self.echoes["keepalive"] += 1
                    await asyncio.sleep(KEEPALIVE_PAUSE)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                self._error("keepalive", name, error)
            finally:
                if writer is not None:
                    writer.transport.abort()

    async def new_connections(self) -> None:
        """A new connection per echo, closed after it."""
        while self.running:
            name = ""
            writer = None
            try:
                reader, writer, name = await self._connect()
                await self._echo(reader, writer)
                self.echoes["new connection"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                self._error("new connection", name, error)
            finally:
                if writer is not None:
                    writer.close()


def _servers_up(text: bytes) -> int:
    """How many server rows of ``/;csv`` say UP (the BACKEND row says UP too: not counted)."""
    rows = csv.DictReader(io.StringIO(text.decode().lstrip("# ")))
    return sum(
        row["status"] == "UP" for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")
    )


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"soak: {what} not within {timeout}s")
        time.sleep(0.1)


def _heap(pid: int, probe: Path) -> dict[str, int]:
    """ddiscover's live Python heap after a full collection (see bench/heapprobe)."""
    probe.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    _wait(probe.exists, "the heap probe's answer", timeout=10)
    blocks, objects = probe.read_text().split()
    return {"heap_blocks": int(blocks), "gc_objects": int(objects)}


def _sample(pid: int, started: float, probe: Path) -> dict[str, float]:
    return {
        "t": round(time.monotonic() - started, 1),
        "rss_kib": rss_kib(pid),
        "fds": open_fds(pid),
        **_heap(pid, probe),
    }


async def _chaos(
    minutes: float, cycle: float, etcd: EtcdProcess, backends: Backends, *, pid: int, probe: Path
) -> tuple[list[dict[str, float]], list[str]]:
    """Kill and replace a backend every ``cycle`` s, restart etcd once; sample ddiscover."""
    started = time.monotonic()
    end = started + minutes * 60
    samples: list[dict[str, float]] = []
    events: list[str] = []
    next_sample, next_cycle, etcd_restarted = started + SAMPLE_EVERY, started + cycle, False
    while time.monotonic() < end:
        await asyncio.sleep(0.1)
        now = time.monotonic()
        if now >= next_sample:
            samples.append(await asyncio.to_thread(_sample, pid, started, probe))
            next_sample += SAMPLE_EVERY
        if not etcd_restarted and now >= started + minutes * 30:
            etcd_restarted = True
            await asyncio.to_thread(etcd.kill)
            events.append(f"{now - started:.0f}s etcd killed")
            await asyncio.sleep(3)
            await asyncio.to_thread(etcd.restart)
            events.append(f"{time.monotonic() - started:.0f}s etcd restarted")
        elif now >= next_cycle:
            next_cycle += cycle
            victim = sorted(backends.live)[0]
            backends.kill(victim)
            await asyncio.sleep(2)
            await asyncio.to_thread(backends.deregister, victim)
            replacement = await asyncio.to_thread(backends.start)
            events.append(f"{now - started:.0f}s killed {victim}, registered {replacement}")
    samples.append(await asyncio.to_thread(_sample, pid, started, probe))
    return samples, events


async def soak(minutes: float, keepalive: int, workers: int, cycle: float) -> dict[str, object]:
    """Run the whole soak; its summary."""
    etcd = EtcdProcess()
    etcd.start()
    backends = Backends(etcd)
    port, stats = free_port(), free_port()
    log_path = Path(tempfile.gettempdir()) / f"ddiscover-soak-{os.getpid()}.log"
    probe = Path(tempfile.gettempdir()) / f"ddiscover-soak-{os.getpid()}.heap"
    probe_env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "heapprobe"), str(ROOT)]),
        "DDISCOVER_HEAP_PROBE": str(probe),
    }
    argv = [
        *entrypoint(),
        "--interface", "127.0.0.1", "--stats-port", str(stats), "--check-interval", "0.5",
        "--rise", "2", "--fall", "2", "--connect-timeout", "1", "--idle-timeout", "30",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        ddiscover = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment(ETCD_HOST=etcd.url, **probe_env),
        )
    load = Load(port, backends)
    health = f"http://127.0.0.1:{stats}/health"
    try:
        _wait(lambda: b'"watching"' in _get(health), "ddiscover")
        etcd.put("/backends/web/port", str(port))
        for _ in range(3):
            backends.start()
        _wait(lambda: _servers_up(_get(f"http://127.0.0.1:{stats}/;csv")) == 3, "3 UP")
        clients = [asyncio.create_task(load.keepalive()) for _ in range(keepalive)]
        clients += [asyncio.create_task(load.new_connections()) for _ in range(workers)]
        samples, events = await _chaos(
            minutes, cycle, etcd, backends, pid=ddiscover.pid, probe=probe
        )
        load.running = False
        await asyncio.gather(*clients)
        _wait(lambda: b'"connections": 0' in _get(health), "no connections")
        idle = {
            "rss_kib": rss_kib(ddiscover.pid),
            "fds": open_fds(ddiscover.pid),
            "fd_kinds": fd_kinds(ddiscover.pid),
            **_heap(ddiscover.pid, probe),
        }
        still_running = ddiscover.poll() is None
    finally:
        load.running = False
        ddiscover.send_signal(signal.SIGKILL)
        ddiscover.wait()
        backends.stop()
        etcd.cleanup()
        probe.unlink(missing_ok=True)
    unexplained = sum(n for kind, n in load.errors.items() if kind.endswith("unexplained"))
    return {
        "minutes": minutes,
        "keepalive_clients": keepalive,
        "new_connection_workers": workers,
        "echoes": dict(load.echoes),
        "errors": dict(load.errors),
        "unexplained_errors": unexplained,
        "unexplained_examples": load.unexplained[:10],
        "events": events,
        "ddiscover_alive_at_end": still_running,
        "first_sample": samples[0],
        "last_sample": samples[-1],
        "after_load": idle,
        "samples": samples,
        "log": str(log_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--keepalive", type=int, default=50, help="keep-alive clients")
    parser.add_argument("--workers", type=int, default=8, help="new-connection clients")
    parser.add_argument("--cycle", type=float, default=20.0, help="seconds between kills")
    args = parser.parse_args()
    os.chdir(ROOT)
    result = asyncio.run(soak(args.minutes, args.keepalive, args.workers, args.cycle))
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result["unexplained_errors"] == 0 else 1)


if __name__ == "__main__":
    main()
