"""The benchmark's stream backend: pushes or swallows a given number of bytes, at a given pace.

One thread per connection (there is only ever one test connection at a time, plus the
proxies' health checks, which connect and close).  The first line a client sends says what to
do; the proxy under test forwards it like any other byte:

``PING``
    answers ``PONG`` (readiness probe through a proxy).
``PUSH <bytes>``
    sends ``<bytes>`` bytes as fast as the connection takes them, then FIN; waits for the
    client to close.  The *client* is the slow consumer (direction backend -> client).
``SINK <bytes> <slow seconds> <bytes per second>``
    reads ``<bytes>`` bytes: paced at ``<bytes per second>`` for the first ``<slow seconds>``,
    then as fast as they come; answers ``OK <bytes read slowly>`` and closes.  The *backend*
    is the slow consumer (direction client -> backend).

Usage: ``backend.py PORT`` (listens on 127.0.0.1:PORT until SIGTERM).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time

CHUNK = 1 << 20
SLOW_READ = 16 * 1024
_BLOB = b"x" * CHUNK


def _first_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < 256:
        more = conn.recv(256)
        if not more:
            return b""
        data += more
    return data


def _push(conn: socket.socket, size: int) -> None:
    view = memoryview(_BLOB)
    left = size
    while left > 0:
        n = min(left, CHUNK)
        conn.sendall(view[:n])
        left -= n
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


def _sink(conn: socket.socket, size: int, slow: float, rate: float, already: int) -> None:
    got = already
    slow_bytes = 0
    start = time.monotonic()
    while got < size:
        elapsed = time.monotonic() - start
        if elapsed < slow:
            allowed = int(rate * elapsed) - slow_bytes
            if allowed < SLOW_READ:
                time.sleep((SLOW_READ - allowed) / rate)
                continue
            data = conn.recv(min(allowed, size - got))
            slow_bytes += len(data)
        else:
            data = conn.recv(min(CHUNK, size - got))
        if not data:
            break
        got += len(data)
    conn.sendall(f"OK {slow_bytes}\n".encode())
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


def _serve(conn: socket.socket) -> None:
    with conn:
        try:
            line = _first_line(conn)
            head, _, rest = line.partition(b"\n")
            words = head.decode("ascii", "replace").split()
            if words == ["PING"]:
                conn.sendall(b"PONG\n")
            elif len(words) == 2 and words[0] == "PUSH":
                _push(conn, int(words[1]))
            elif len(words) == 4 and words[0] == "SINK":
                _sink(conn, int(words[1]), float(words[2]), float(words[3]), len(rest))
        except OSError:
            pass


def main(port: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]))
