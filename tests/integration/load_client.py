"""A client process that opens thousands of connections to a port and says how each went.

Run by the fault tests (and ``bench/soak``) so that the clients' file descriptors are not the
test process's.  It prints one JSON object per line on stdout; every outcome is counted by
name: ``ok``, or the exception that ended the connection (``ConnectionResetError``,
``IncompleteReadError`` for an EOF, ``TimeoutError``...).

``load_client.py hold PORT COUNT CONCURRENCY``
    opens ``COUNT`` connections, at most ``CONCURRENCY`` of them connecting at once; each
    reads the backend's greeting line and echoes ``ping``.  It prints
    ``{"outcomes": {...}, "backends": {name: count}, "seconds": ...}``, keeps the ``ok``
    connections open until a line arrives on stdin, closes them and prints
    ``{"closed": N}``.
``load_client.py idle PORT COUNT TIMEOUT``
    opens ``COUNT`` connections that never send a byte; each waits for the greeting and then
    for the proxy to close it, for at most ``TIMEOUT`` seconds in all.  It prints
    ``{"outcomes": {...}, "ends": {...}, "waited_max": ..., "idle_min": ..., "idle_max": ...}``:
    how the greeted connections ended (``eof`` or ``reset``), the longest wait for a greeting
    and the shortest and longest time from greeting to close.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from tests.integration.echo_server import raise_fd_limit

CONNECT_CONCURRENCY = 256
STEP_TIMEOUT = 30.0


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def _open_and_ping(
    port: int, gate: asyncio.Semaphore
) -> tuple[str, str, asyncio.StreamWriter | None]:
    """One held connection: (outcome, backend name, writer to keep open if ok)."""
    writer = None
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), STEP_TIMEOUT
            )
            name = await asyncio.wait_for(reader.readuntil(b"\n"), STEP_TIMEOUT)
        writer.write(b"ping\n")
        echo = await asyncio.wait_for(reader.readexactly(5), STEP_TIMEOUT)
        if echo != b"ping\n":
            raise ValueError(f"echo {echo!r}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        if writer is not None:
            writer.transport.abort()
        return type(error).__name__, "", None
    return "ok", name.decode().strip(), writer


async def hold(port: int, count: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    results = await asyncio.gather(*(_open_and_ping(port, gate) for _ in range(count)))
    report(
        outcomes=Counter(outcome for outcome, _, _ in results),
        backends=Counter(name for _, name, _ in results if name),
        seconds=round(time.monotonic() - started, 3),
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    writers = [writer for _, _, writer in results if writer is not None]
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)
    report(closed=len(writers))


async def _stay_idle(
    port: int, gate: asyncio.Semaphore, deadline: float
) -> tuple[str, float, float]:
    """One idle connection: (how it ended, seconds until greeted, seconds greeted to closed)."""
    try:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connected = time.monotonic()
        await asyncio.wait_for(reader.readuntil(b"\n"), deadline - connected)
        greeted = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(1), deadline - greeted)
            end = "eof" if not data else "data"
        except ConnectionResetError:
            end = "reset"
        writer.transport.abort()
        return end, greeted - connected, time.monotonic() - greeted
    except (OSError, asyncio.IncompleteReadError) as error:
        return type(error).__name__, 0.0, 0.0


async def idle(port: int, count: int, timeout: float) -> None:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    deadline = time.monotonic() + timeout
    results = await asyncio.gather(*(_stay_idle(port, gate, deadline) for _ in range(count)))
    greeted = [(waited, lasted) for end, waited, lasted in results if end in ("eof", "reset")]
    report(
        outcomes=Counter("ok" if end in ("eof", "reset") else end for end, _, _ in results),
        ends=Counter(end for end, _, _ in results if end in ("eof", "reset")),
        waited_max=round(max((w for w, _ in greeted), default=0.0), 3),
        idle_min=round(min((lasted for _, lasted in greeted), default=0.0), 3),
        idle_max=round(max((lasted for _, lasted in greeted), default=0.0), 3),
    )


def main(argv: list[str]) -> None:
    raise_fd_limit()
    mode, port, count, extra = argv[0], int(argv[1]), int(argv[2]), argv[3]
    if mode == "hold":
        asyncio.run(hold(port, count, int(extra)))
    else:
        asyncio.run(idle(port, count, float(extra)))


if __name__ == "__main__":
    main(sys.argv[1:])
