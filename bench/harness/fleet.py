"""A fleet of real listening backends in one process: ``fleet.py PORT0 COUNT ADDR...``.

It listens on every ``ADDR:PORT0+i`` for ``i < COUNT`` (loopback addresses such as
``127.0.1.1``), and on each accepted connection echoes the first bytes it reads, then closes:
a health check (connect, hang up) costs one accept, and a request (``PING``) gets ``PING`` back.
One line ``ready N`` on stdout once every socket listens; a bind failure is fatal (exit 1).
"""

from __future__ import annotations

import resource
import selectors
import signal
import socket
import sys


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))


def listen_all(port0: int, count: int, addresses: list[str]) -> list[socket.socket]:
    """A non-blocking listening socket on every address and port of the fleet."""
    listeners = []
    for addr in addresses:
        for i in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port0 + i))
            except OSError as e:
                raise SystemExit(f"fleet: cannot bind {addr}:{port0 + i}: {e}") from None
            s.listen(128)
            s.setblocking(False)
            listeners.append(s)
    return listeners


def serve(listeners: list[socket.socket]) -> None:
    sel = selectors.DefaultSelector()
    for s in listeners:
        sel.register(s, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data is None:  # a listener
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            try:
                data = sock.recv(4096)
                if data:
                    sock.send(data)
            except OSError:
                pass
            sel.unregister(sock)
            sock.close()


def main(argv: list[str]) -> int:
    port0, count, addresses = int(argv[0]), int(argv[1]), argv[2:]
    _raise_fd_limit(len(addresses) * count + 4096)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listeners = listen_all(port0, count, addresses)
    print(f"ready {len(listeners)}", flush=True)
    serve(listeners)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
