"""Decoding etcd's JSON: one object per body, typed fields, base64 keys and values.

Every function here raises :class:`~ddiscover.registry.errors.MalformedError`, and nothing else,
on input etcd would not send, with a message that says what was wrong and quotes at most a
clipped piece of the input.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from typing import Any

from ddiscover.registry.errors import MalformedError, one_line
from ddiscover.text import CLIP, clip


def decode_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object, or raise :class:`MalformedError` saying why not.

    ``json.loads`` raises ``RecursionError``, not ``ValueError``, on a body nested deeper than
    the interpreter's recursion limit (``b"[" * 100000``): that is malformed too.
    """
    try:
        decoded = json.loads(body)
    except ValueError as e:
        raise MalformedError(f"not JSON ({clip(one_line(str(e)))})") from None
    except RecursionError:
        raise MalformedError("JSON nested too deeply") from None
    if not isinstance(decoded, dict):
        raise MalformedError(f"not a JSON object but {_json_kind(decoded)}")
    return decoded


#: How deep a v2 listing's JSON may nest.  etcd v2 nests a listing two JSON levels per key
#: level, and accepts keys hundreds of levels deep: one such key under the prefix must be
#: rejected on its own (by the layout), not fail the listing of every other key, as it does at
#: the interpreter's default recursion limit of 1,000.  The C decoder needs well under 200
#: bytes of stack per level (40,000 levels decoded fine under the default 8 MiB stack), so
#: 10,000 levels, a key about 5,000 levels deep, is safe; deeper still is malformed.
LISTING_DEPTH = 10_000


def decode_listing(body: bytes) -> dict[str, Any]:
    """Parse a v2 listing like :func:`decode_object`, allowing it to nest ``LISTING_DEPTH``
    levels deep."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + LISTING_DEPTH)
    try:
        return decode_object(body)
    finally:
        sys.setrecursionlimit(limit)


def _json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words, for a message."""
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    """``obj[name]``, which must be a ``kind`` (and not a bool posing as an int)."""
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedError(f"field {name!r} is missing or not {kind.__name__}")
    return value


def text_field(obj: Mapping[str, Any], name: str) -> str:
    """``obj[name]`` as one clipped line if it is a string, else ``""`` (for error messages)."""
    value = obj.get(name)
    return clip(one_line(value)) if isinstance(value, str) else ""


def body_text(body: bytes) -> str:
    """The start of a body that is not etcd's JSON (an HTML error page...), as one line."""
    text = one_line(body[: 4 * CLIP].decode("utf-8", "replace"))
    if len(body) <= 4 * CLIP:
        return clip(text)
    return f"{text[:CLIP]}... ({len(body)} bytes)"


def b64(text: str) -> str:
    """Base64 of the UTF-8 of ``text``, as the v3 gateway wants keys and values."""
    return base64.b64encode(text.encode()).decode("ascii")


def unb64(text: object) -> str:
    """The text of a base64 field; bytes that are not UTF-8 become U+FFFD."""
    if not isinstance(text, str):
        raise MalformedError("a key or value is not a base64 string")
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except ValueError:
        raise MalformedError(f"{clip(text, 40)!r} is not base64") from None
