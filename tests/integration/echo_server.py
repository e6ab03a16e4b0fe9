"""A backend process that holds thousands of connections: asyncio, one task per connection.

Run as ``python echo_server.py MODE NAME``; it listens on 127.0.0.1 (port chosen by the
kernel, backlog 4096), prints the port on stdout, and serves until killed.  Every client is
greeted with ``NAME\\n``; then, by ``MODE``:

``echo``
    sends back whatever it reads; when the client shuts its write side, closes the
    connection once all of it has been sent back.
``stream``
    sends 64 KiB blocks as fast as the connection takes them and never reads (not even into
    asyncio's buffer), so what the client sends stays unread in the kernel, and a SIGKILL
    then resets the connection instead of closing it with a FIN.

The end-to-end tests start it (in ``echo`` mode) through
:class:`tests.integration.backends.ProcessBackend`, the fault and endurance tests and
``bench/soak`` through :func:`tests.integration.processes.echo_server`.
"""

from __future__ import annotations

import asyncio
import resource
import sys

BLOCK = b"x" * 65536


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one: one fd per held connection."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    while True:
        writer.write(BLOCK)
        await writer.drain()


async def main(mode: str, name: str) -> None:
    serve = {"echo": _echo, "stream": _stream}[mode]
    greeting = name.encode() + b"\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(greeting)
            await serve(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main(sys.argv[1], sys.argv[2]))
