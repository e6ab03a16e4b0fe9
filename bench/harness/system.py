"""Child processes, /proc readings, free ports, waiting for ports, and what the machine is."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.procfs import status_kib

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent


PROXY_CPU = 0
LOAD_CPU = 1
MiB = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the driver dies, whatever kills it."""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_next_port = 0


def free_port() -> int:
    """A loopback port nobody listens on, below the ephemeral range.

    Ports the kernel hands out (bind to 0) come from the ephemeral range, which the tens of
    thousands of client connections of a run also draw from: a port found free there can be
    some connection's local port a moment later, and the listener then fails to bind.
    """
    global _next_port  # noqa: PLW0603
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    first = max(1024, low - 12000)
    if not _next_port:
        _next_port = first + os.getpid() % 1000
    for _ in range(low - first):
        port = _next_port
        _next_port = port + 1 if port + 1 < low else first
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Processes:
    """Every child process by name; each is stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        argv: list[str],
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs: the PID is the program's
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (single-threaded driver)
            )
        self.procs[name] = proc
        return proc

    def check(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def hwm_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


def reset_hwm(pid: int) -> None:
    """Reset the peak RSS (VmHWM) of ``pid`` to its current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpus_busy(interval: float = 0.3) -> float:
    """How many CPUs were busy (0 to the CPU count) over ``interval``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])

    busy0, total0 = sample()
    time.sleep(interval)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


class Quiet:
    """Waits, before each measurement, until the machine is quiet (others run tests here too).

    Between measurements nothing of ours is busy, so CPU use above ``threshold`` CPUs is
    someone else's.  Each wait is bounded, and so is the total over a run.
    """

    def __init__(self, budget: float, threshold: float = 0.3, longest: float = 30.0) -> None:
        self.budget, self.threshold, self.longest = budget, threshold, longest

    def wait(self) -> float:
        """Return the background load (CPUs) when the measurement starts."""
        start = time.monotonic()
        busy = cpus_busy()
        while (
            busy > self.threshold and self.budget > 0 and time.monotonic() - start < self.longest
        ):
            time.sleep(1.0)
            self.budget -= 1.3
            busy = cpus_busy()
        if time.monotonic() - start > 1:
            waited = time.monotonic() - start
            log(f"  waited {waited:.0f}s for a quiet machine (now {busy:.2f} CPUs busy)")
        return busy


def listen_drops() -> int:
    """TcpExt ListenDrops of this network namespace: SYNs dropped at a full accept queue."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            fields = dict(zip(head.split()[1:], values.split()[1:], strict=True))
            return int(fields.get("ListenDrops", 0))
    return 0


def wait_port(
    port: int, procs: Processes | None = None, name: str = "", timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if procs is not None and name:
            procs.check(name)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} after {timeout}s") from None
            time.sleep(0.05)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def machine_info(python: str) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    debian = "?"
    with contextlib.suppress(OSError):
        debian = Path("/etc/debian_version").read_text().strip()
    twisted = _output([python, "-c", "import twisted; print(twisted.__version__)"])
    pyver = _output([python, "-c", "import sys; print(sys.version.split()[0])"])
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--", "ddiscover"])
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "debian": debian,
        "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "python": pyver,
        "twisted": twisted,
        "ddiscover_commit": commit + ("+dirty" if dirty else ""),
        "haproxy": _version(["haproxy", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "iperf3": _version(["iperf3", "--version"]),
        "etcd": _version(["etcd", "--version"]),
    }


def prepare_process() -> None:
    """Pin this driver (and so every child but the proxies) to the load CPU; raise fd limits."""
    if not {PROXY_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        raise SystemExit("the benchmark needs CPUs 0 and 1: the proxy on 0, the load on 1")
    os.sched_setaffinity(0, {LOAD_CPU})  # every child inherits CPU 1; proxies use taskset -c 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(limit, soft), max(limit, hard)))
            break
        except (ValueError, OSError):
            continue
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory for logs and configs; removed at the end unless DDBENCH_KEEP is set."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if not os.environ.get("DDBENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
