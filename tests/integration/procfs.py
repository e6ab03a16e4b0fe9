"""What ``/proc`` says about a process: its open descriptors, what they are, its memory.

Only the standard library, so the benchmarks can import it without Twisted's reactor.
"""

from __future__ import annotations

import os


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


_TCP_STATES = {
    "01": "ESTABLISHED",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "0A": "LISTEN",
}


def fd_kinds(pid: int) -> dict[str, int]:
    """What process ``pid``'s descriptors are, counted by kind.

    TCP sockets are named by state and ports (``tcp LISTEN :8080``, ``tcp ESTABLISHED ->
    :2379``: the local port of a connection is left out, so connections to one server count
    together); other descriptors by what ``/proc/PID/fd`` links to (``pipe``,
    ``anon_inode:[eventpoll]``, a path).
    """
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                name = _TCP_STATES.get(state, state)
                if name == "LISTEN":
                    sockets[inode] = f"tcp LISTEN :{int(local.rsplit(':')[1], 16)}"
                else:
                    sockets[inode] = f"tcp {name} -> :{int(remote.rsplit(':')[1], 16)}"
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            kind = sockets.get(target[8:-1], "socket (not TCP)")
        elif target.startswith("pipe:"):
            kind = "pipe"
        else:
            kind = target
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def status_kib(pid: int, field: str) -> int:
    """A size in KiB from ``/proc/PID/status``, such as ``VmRSS`` or ``VmHWM``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid``, in KiB."""
    return status_kib(pid, "VmRSS")
