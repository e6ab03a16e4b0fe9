"""Text from outside (registry values, keys, client bytes) made safe to put in one log line or
one table cell: never longer than a couple of hundred characters, and saying what was cut."""

from __future__ import annotations

#: Characters of an outside value shown before it is cut.
CLIP = 200


def clip(text: str, limit: int = CLIP) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and its full size.

    ``clip("x" * 10**6)`` is the first ``limit`` characters followed by
    ``"... (1000000 bytes)"``, the size counted in UTF-8 bytes as the registry stores it.
    """
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "replace"))
    return f"{text[:limit]}... ({size} bytes)"
