"""The value types of per-service policy keys, and one parser per type.

Each parser takes a value as TOML or JSON gives it (``str``, ``int``, ``float``, ``bool``,
lists) and returns it in its final type, or raises :class:`ValueError` whose text completes the
sentence "``<key>`` ...": ``must be a duration such as 30s, 500ms or 2m``.  The caller names the
key and shows the value, so every message has the same shape wherever the value came from.

Booleans are never numbers here (Python's ``True == 1`` would otherwise let ``rise = true``
through), and ``inf``/``nan`` (which TOML allows) are never durations.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import attrs

E = TypeVar("E", bound=enum.Enum)


class Mode(enum.Enum):
    """How a service's connections are handled; HTTP and UDP modes are later additions."""

    TCP = "tcp"


class Balance(enum.Enum):
    """The balancing algorithm of a service (see :mod:`ddiscover.proxy.balance`)."""

    ROUNDROBIN = "roundrobin"
    LEASTCONN = "leastconn"
    RANDOM = "random"
    SOURCE = "source"


class CheckKind(enum.Enum):
    """The active health check: a TCP connect, an HTTP request, or none (always UP)."""

    TCP = "tcp"
    HTTP = "http"
    NONE = "none"


class ProxyVersion(enum.Enum):
    """Whether, and in which version, a PROXY protocol header starts each backend connection."""

    NONE = "none"
    V1 = "v1"
    V2 = "v2"


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h|d)\s*")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")


def _is_number(raw: object) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool)


def duration(minimum: float) -> Callable[[object], float]:
    """Seconds, given as a number or as text with units: ``30s``, ``500ms``, ``2m``, ``1m30s``.

    The units are haproxy's (``us``, ``ms``, ``s``, ``m``, ``h``, ``d``); a bare number in a
    string (``"2"``) is seconds too, as on the command line.
    """
    expected = (
        f"must be a duration of at least {format_duration(minimum)} such as 30s, 500ms or 2m"
    )

    def parse(raw: object) -> float:
        seconds: float | None = None
        if _is_number(raw):
            seconds = float(raw)  # type: ignore[arg-type]
        elif isinstance(raw, str):
            text = raw.strip()
            if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text):
                seconds = float(text)
            elif _DURATION.fullmatch(text):
                seconds = sum(
                    float(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(text)
                )
        if seconds is None or not math.isfinite(seconds) or seconds < minimum:
            raise ValueError(expected)
        return seconds

    return parse


def format_duration(seconds: float) -> str:
    """The shortest of ``500ms``, ``30s``, ``2m``, ``1h`` that says ``seconds`` exactly."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds == 0:
        return "0s"
    if (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def whole(minimum: int, maximum: int) -> Callable[[object], int]:
    """A whole number within ``[minimum, maximum]``; TOML and JSON integers only."""
    expected = f"must be a whole number from {minimum} to {maximum}"

    def parse(raw: object) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool) or not minimum <= raw <= maximum:
            raise ValueError(expected)
        return raw

    return parse


port_number = whole(1, 65535)


def choice(kind: type[E]) -> Callable[[object], E]:
    """One of the values of an enumeration, written in lower case as in the docs."""
    names = ", ".join(member.value for member in kind)
    expected = f"must be one of {names}"

    def parse(raw: object) -> E:
        for member in kind:
            if raw == member.value:
                return member
        raise ValueError(expected)

    return parse


def flag(raw: object) -> bool:
    """``true`` or ``false``, as TOML and JSON write them."""
    if not isinstance(raw, bool):
        raise ValueError("must be true or false")
    return raw


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_VISIBLE = re.compile(r"[!-~]+")


def http_method(raw: object) -> str:
    """An HTTP method: an RFC 9110 token such as ``GET``, ``HEAD`` or ``OPTIONS``."""
    if not isinstance(raw, str) or not _TOKEN.fullmatch(raw):
        raise ValueError("must be an HTTP method such as GET, HEAD or OPTIONS")
    return raw


def http_path(raw: object) -> str:
    """A request target in origin form (``/healthz?full=1``): visible ASCII, from ``/``."""
    if (
        not isinstance(raw, str)
        or not raw.startswith("/")
        or len(raw) > 1024
        or not _VISIBLE.fullmatch(raw)
    ):
        raise ValueError("must be a path starting with / in visible ASCII, such as /healthz")
    return raw


def http_host(raw: object) -> str:
    """A ``Host`` header value: visible ASCII without spaces, such as ``db.internal:8008``."""
    if not isinstance(raw, str) or len(raw) > 255 or not _VISIBLE.fullmatch(raw):
        raise ValueError("must be a host name such as db.internal or db.internal:8008")
    return raw


@attrs.frozen
class StatusSet:
    """HTTP status codes a check accepts, as inclusive ranges: ``200-399``, ``200,204,300-399``.

    ``code in statuses`` is what the HTTP check asks; ``str()`` writes the set back the way
    it is configured, so the stats page shows what the operator wrote.
    """

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and any(low <= code <= high for low, high in self.ranges)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.ranges)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


_STATUS_RANGE = re.compile(r"\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?")


def status_set(raw: object) -> StatusSet:
    """``"200-399"``, ``"200,204"``, ``200``, or a list of them: ``[200, "300-399"]``."""
    expected = "must be HTTP status codes or ranges from 100 to 599, such as 200-399 or 200,204"
    parts: list[object] = list(raw) if isinstance(raw, list) else [raw]
    ranges: list[tuple[int, int]] = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool) and 100 <= part <= 599:
            ranges.append((part, part))
            continue
        if not isinstance(part, str):
            raise ValueError(expected)
        for item in part.split(","):
            match = _STATUS_RANGE.fullmatch(item)
            if match is None:
                raise ValueError(expected)
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if high < low:
                raise ValueError(expected)
            ranges.append((low, high))
    if not ranges:
        raise ValueError(expected)
    return StatusSet(tuple(ranges))
