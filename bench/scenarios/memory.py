"""Memory workloads: a slow consumer on either side, and a burst of idle connections."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from typing import Any

from bench.harness.backends import Backends
from bench.harness.proxies import Instance, drain_listener
from bench.harness.system import MiB, cpu_seconds, hwm_kib, listen_drops, reset_hwm
from tests.integration.procfs import rss_kib


def slow_consumer(
    inst: Instance, direction: str, size: int, window: float, rate: float
) -> dict[str, Any]:
    """Push ``size`` bytes through the proxy to a reader pacing itself at ``rate`` B/s for
    ``window`` seconds (then draining the rest at full speed); peak RSS growth of the proxy.

    ``direction`` "down": the backend pushes and this client is the slow reader; "up": this
    client pushes and the backend reads slowly.  The peak is VmHWM, reset just before.
    """
    pid = inst.pid
    assert pid is not None
    reset_hwm(pid)
    base = rss_kib(pid)
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", inst.ports["slow"]), timeout=60) as s:
        if direction == "down":
            s.sendall(f"PUSH {size}\n".encode())
            got, slow_bytes = _read_slowly(s, size, window, rate)
            ok = got == size
        else:
            s.sendall(f"SINK {size} {window} {rate}\n".encode())
            reply = _push(s, size)
            ok = reply.startswith(b"OK ")
            slow_bytes = int(reply.split()[1]) if ok else 0
    return {
        "peak_growth_kib": hwm_kib(pid) - base,
        "rss_base_kib": base,
        "complete": ok,
        "slow_bytes": slow_bytes,
        "seconds": time.monotonic() - start,
    }


def _read_slowly(s: socket.socket, size: int, window: float, rate: float) -> tuple[int, int]:
    """Read ``size`` bytes: at ``rate`` B/s for ``window`` s, then at once; (total, slowly)."""
    start = time.monotonic()
    got = slow_bytes = 0
    while got < size:
        elapsed = time.monotonic() - start
        if elapsed < window:
            allowed = int(rate * elapsed) - got
            if allowed < 16384:
                time.sleep((16384 - allowed) / rate)
                continue
            data = s.recv(min(allowed, 65536))
            slow_bytes += len(data)
        else:
            data = s.recv(MiB)
        if not data:
            break
        got += len(data)
    return got, slow_bytes


def _push(s: socket.socket, size: int) -> bytes:
    """Send ``size`` bytes as fast as the connection takes them, FIN, then read the reply."""
    blob = memoryview(b"u" * MiB)
    left = size
    while left:
        n = min(left, MiB)
        s.sendall(blob[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while more := s.recv(256):
        reply += more
    return reply


def idle_burst(inst: Instance, backends: Backends, count: int, settle: float) -> dict[str, Any]:
    """Open ``count`` connections through the proxy at once and leave them idle: the time
    until the backend has accepted every one, and the proxy's RSS per connection."""
    listener = backends.idle_listener
    assert listener is not None
    drain_listener(listener)  # the proxies' health checks, queued since the last burst
    pid = inst.pid
    base = rss_kib(pid) if pid else 0
    cpu0 = cpu_seconds(pid)
    drops0 = listen_drops()
    start = time.monotonic()
    clients, accepted, failed = _burst(inst.ports["idle"], listener, count, deadline=start + 30)
    absorbed = time.monotonic() - start
    drops = listen_drops() - drops0
    time.sleep(settle)
    after = rss_kib(pid) if pid else 0
    result = {
        "absorb_s": absorbed,
        "accepted": len(accepted),
        "failed": failed,
        "listen_drops": drops,
        # Per connection that got through (all of them, unless the burst timed out).
        "kib_per_conn": (after - base) / max(1, len(accepted)) if pid else None,
        "rss_base_kib": base,
        "rss_kib": after,
        "proxy_cpu_s": cpu_seconds(pid) - cpu0,
    }
    for s in clients + accepted:
        s.close()
    time.sleep(settle)
    return result


def _burst(
    port: int, listener: socket.socket, count: int, deadline: float
) -> tuple[list[socket.socket], list[socket.socket], int]:
    """Start ``count`` non-blocking connects to ``port`` back to back (accepting on the backend
    ``listener`` every 100, so its own queue never overflows); run until every connect has
    completed and the backend has accepted ``count``.  (clients, accepted, failed connects)."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    clients: list[socket.socket] = []
    accepted: list[socket.socket] = []
    failed = 0

    def accept_all() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            accepted.append(conn)

    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        clients.append(s)
        sel.register(s, selectors.EVENT_WRITE, s)
        if i % 100 == 99:
            accept_all()
    connecting = count
    while (len(accepted) < count or connecting) and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            if key.data is None:
                accept_all()
                continue
            sock: socket.socket = key.data
            sel.unregister(sock)
            connecting -= 1
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
    sel.close()
    return clients, accepted, failed
