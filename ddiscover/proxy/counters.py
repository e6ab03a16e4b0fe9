"""Session and byte counters for one service or one backend, named as haproxy names them.

The forwarding code bumps these fields directly on its hot path, so they are plain slotted
integers with no locking, no properties and no callbacks; the stats page reads them as they
are.  Field names match haproxy's CSV columns (``scur``, ``stot``, ``bin``...) so the page and
any exporter can map them one to one.
"""

from __future__ import annotations

import attrs


@attrs.define(eq=False)
class Counters:
    """Live counters of one service (frontend) or one backend (server).

    ``bin`` counts client-to-backend bytes and ``bout`` backend-to-client bytes, as haproxy
    does.  ``wretr`` counts connect retries to the same backend, ``wredis`` retries that went
    to another backend, ``econ`` connections given up after the last attempt failed, and
    ``cli_abrt``/``srv_abrt`` sessions that the client or the backend reset.
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

    def session_opened(self) -> None:
        """Count one more current and total session, keeping the maximum seen."""
        self.scur += 1
        self.stot += 1
        self.smax = max(self.smax, self.scur)

    def session_closed(self) -> None:
        """Count one session less."""
        self.scur -= 1
