"""The registry's ``<prefix>/<service>/options`` key: a JSON object of policy keys.

Service owners know their protocol, so they may say ``{"balance": "leastconn", "check":
"http", "check_path": "/healthz"}`` next to the ``port`` key they already write.  The value is
checked as a whole: not JSON, not an object, a key given twice, an unknown key or one bad value
rejects this service's options (one line naming the key and the value) and nothing else.  The
service then runs with the policy it would have without the key, and every other service is
untouched.
"""

from __future__ import annotations

import json

from ddiscover.policy.model import Layer, Origin, PolicyError, Source, parse_layer

MAX_BYTES = 64 * 1024
"""An ``options`` value larger than this is rejected unread."""


_KINDS = {
    "list": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
}


def _object_without_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise PolicyError(f"key {json.dumps(key)} is given twice", key)
        found[key] = value
    return found


def parse_options(key: str, raw: str) -> Layer:
    """Parse the ``options`` value ``raw`` stored at registry ``key``.

    Raise :class:`~ddiscover.policy.model.PolicyError` whose text starts with ``key``.
    """
    if len(raw) > MAX_BYTES:
        raise PolicyError(f"{key}: options is larger than {MAX_BYTES} bytes")
    try:
        document = json.loads(raw, object_pairs_hook=_object_without_repeats)
    except json.JSONDecodeError as error:
        raise PolicyError(
            f"{key}: options is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except PolicyError as error:
        raise PolicyError(f"{key}: options {error}", error.key) from None
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "null"
        raise PolicyError(
            f"{key}: options must be a JSON object of keys, got {_KINDS.get(kind, kind)}"
        )
    try:
        return parse_layer(document, lambda _name: Origin(Source.REGISTRY, key))
    except PolicyError as error:
        raise PolicyError(f"{key}: options {error}", error.key) from None
