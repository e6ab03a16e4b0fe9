"""The soak's view into ddiscover's Python heap, loaded only into the soak's ddiscover process.

``bench/soak`` puts this directory on that process's ``PYTHONPATH`` and sets
``DDISCOVER_HEAP_PROBE`` to a file name.  On SIGUSR2 the process runs a full collection and
writes "<allocated blocks> <tracked objects>" to that file, so the soak can tell a growing
live heap (a leak) from RSS that grows only because the allocator keeps freed memory.
"""

import gc
import os
import signal
import sys

_target = os.environ.get("DDISCOVER_HEAP_PROBE")


def _report(signum: int, frame: object) -> None:
    gc.collect()
    # gc.get_objects() leaves out what gc.freeze() moved out of reach: the startup heap.
    line = f"{sys.getallocatedblocks()} {len(gc.get_objects())}\n"
    partial = f"{_target}.partial"
    with open(partial, "w") as out:
        out.write(line)
    os.replace(partial, _target)


if _target:
    signal.signal(signal.SIGUSR2, _report)
