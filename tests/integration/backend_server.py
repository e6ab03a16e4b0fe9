"""A real backend process for end-to-end tests: it greets each client with its name, then echoes.

Run as ``python backend_server.py NAME``; it listens on 127.0.0.1 (port chosen by the kernel),
prints the port on stdout, and serves until killed.  Tests SIGKILL it to play a dead container.
"""

import socket
import sys
import threading


def serve(conn: socket.socket, name: bytes) -> None:
    with conn:
        conn.sendall(name + b"\n")
        while data := conn.recv(65536):
            conn.sendall(data)


def main(name: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, name.encode()), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1])
