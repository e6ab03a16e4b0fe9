"""Session and byte counters for one service or one backend, named as haproxy names them.

The forwarding code bumps these fields directly on its hot path, so they are plain slotted
integers with no locking, no properties and no callbacks; the stats page reads them as they
are.  Field names match haproxy's CSV columns (``scur``, ``stot``, ``bin``...) so the page and
any exporter can map them one to one.
"""

from __future__ import annotations

import attrs


@attrs.define(eq=False)
class SessionRate:
    """Sessions per second, counted the way haproxy's ``freq_ctr`` counts them.

    Two counts (this second's and the previous second's) updated where sessions start, so
    there is no timer: the rate read at time ``t`` is this second's count plus the previous
    second's weighted by the part of it still inside the sliding one-second window.
    ``max`` is the highest rate seen at the start of a session.
    """

    second: int = 0
    current: int = 0
    previous: int = 0
    max: int = 0

    def count(self, now: float) -> None:
        """Count one session started at ``now`` and keep the maximum rate."""
        second = int(now)
        if second != self.second:
            self.previous = self.current if second == self.second + 1 else 0
            self.current = 0
            self.second = second
        self.current += 1
        self.max = max(self.max, self.read(now))

    def read(self, now: float) -> int:
        """The rate over the second that ends at ``now``."""
        second = int(now)
        if second == self.second:
            return self.current + int(self.previous * (1 - (now - second)))
        if second == self.second + 1:
            return int(self.current * (1 - (now - second)))
        return 0


@attrs.define(eq=False)
class Counters:
    """Live counters of one service (frontend) or one backend (server).

    ``bin`` counts client-to-backend bytes and ``bout`` backend-to-client bytes, as haproxy
    does.  ``wretr`` counts connect retries to the same backend, ``wredis`` retries that went
    to another backend, ``econ`` connections given up after the last attempt failed, and
    ``cli_abrt``/``srv_abrt`` sessions that the client or the backend reset.  ``rate`` is
    the session rate and ``last_session`` when the last session started (haproxy's
    ``lastsess``), both on the reactor's clock.
    """

    scur: int = 0
    smax: int = 0
    stot: int = 0
    bin: int = 0
    bout: int = 0
    econ: int = 0
    wretr: int = 0
    wredis: int = 0
    cli_abrt: int = 0
    srv_abrt: int = 0
    rate: SessionRate = attrs.Factory(SessionRate)
    last_session: float | None = None

    def session_opened(self, now: float) -> None:
        """Count one more current and total session started at ``now``, keeping the maxima."""
        self.scur += 1
        self.stot += 1
        self.smax = max(self.smax, self.scur)
        self.rate.count(now)
        self.last_session = now

    def session_closed(self) -> None:
        """Count one session less."""
        self.scur -= 1
