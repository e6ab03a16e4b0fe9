"""The per-service policy: one frozen value with every key, and where each value came from.

:class:`ServicePolicy` has one field per key of the services file and of the registry's
``options`` object; each field carries its default and its parser (:mod:`.values`), so the list
of keys, their defaults and their validation live in one place.  A :class:`Layer` is what one
source says (some keys, each with its :class:`Origin`); :mod:`.merge` stacks layers into the
effective policy.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ddiscover.policy.values import (
    Balance,
    CheckKind,
    Mode,
    ProxyVersion,
    StatusSet,
    choice,
    duration,
    flag,
    format_duration,
    http_host,
    http_method,
    http_path,
    port_number,
    status_set,
    whole,
)
from ddiscover.text import clip

_PARSE = "parse"
_SHOW = "show"


def _key(parse: Callable[[object], Any], show: Callable[[Any], str] = str) -> dict[str, Any]:
    """A field's metadata: how to parse the key, and how to show its value."""
    return {_PARSE: parse, _SHOW: show}


def _show_enum(value: enum.Enum) -> str:
    return str(value.value)


def _show_flag(value: bool) -> str:
    return "true" if value else "false"


def _show_duration(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def _show_optional(value: object) -> str:
    return "-" if value is None else str(value)


@attrs.frozen
class ServicePolicy:
    """Everything that may differ from one service to another; durations are seconds.

    ``None`` means "not set, use the fallback named here": ``port`` the registry's port key,
    ``fastinter``/``downinter`` ``check_interval`` (as haproxy's do ``inter``), ``maxconn`` only
    the global ``--maxconn``, ``check_host`` the checked backend's address, ``check_port`` the
    backend's own port.  ``slowstart``, ``error_limit`` and ``panic_threshold`` are off at 0.
    """

    mode: Mode = attrs.field(default=Mode.TCP, metadata=_key(choice(Mode), _show_enum))
    port: int | None = attrs.field(default=None, metadata=_key(port_number, _show_optional))
    balance: Balance = attrs.field(
        default=Balance.ROUNDROBIN, metadata=_key(choice(Balance), _show_enum)
    )
    weight: int = attrs.field(default=1, metadata=_key(whole(1, 256)))
    maxconn: int | None = attrs.field(
        default=None, metadata=_key(whole(1, 1_000_000), _show_optional)
    )
    connect_timeout: float = attrs.field(
        default=5.0, metadata=_key(duration(0.01), _show_duration)
    )
    idle_timeout: float = attrs.field(default=60.0, metadata=_key(duration(0.01), _show_duration))
    retries: int = attrs.field(default=3, metadata=_key(whole(1, 100)))
    check: CheckKind = attrs.field(
        default=CheckKind.TCP, metadata=_key(choice(CheckKind), _show_enum)
    )
    check_interval: float = attrs.field(default=2.0, metadata=_key(duration(0.01), _show_duration))
    fastinter: float | None = attrs.field(
        default=None, metadata=_key(duration(0.01), _show_duration)
    )
    downinter: float | None = attrs.field(
        default=None, metadata=_key(duration(0.01), _show_duration)
    )
    rise: int = attrs.field(default=3, metadata=_key(whole(1, 1000)))
    fall: int = attrs.field(default=2, metadata=_key(whole(1, 1000)))
    check_port: int | None = attrs.field(default=None, metadata=_key(port_number, _show_optional))
    check_method: str = attrs.field(default="GET", metadata=_key(http_method))
    check_path: str = attrs.field(default="/", metadata=_key(http_path))
    check_host: str | None = attrs.field(default=None, metadata=_key(http_host, _show_optional))
    check_expect: StatusSet = attrs.field(
        default=StatusSet(((200, 399),)), metadata=_key(status_set)
    )
    check_send_proxy: bool = attrs.field(default=False, metadata=_key(flag, _show_flag))
    send_proxy: ProxyVersion = attrs.field(
        default=ProxyVersion.NONE, metadata=_key(choice(ProxyVersion), _show_enum)
    )
    accept_proxy: bool = attrs.field(default=False, metadata=_key(flag, _show_flag))
    slowstart: float = attrs.field(default=0.0, metadata=_key(duration(0), _show_duration))
    error_limit: int = attrs.field(default=10, metadata=_key(whole(0, 1000)))
    panic_threshold: int = attrs.field(default=0, metadata=_key(whole(0, 100)))

    @property
    def check_timeout(self) -> float:
        """How long one check may take: ``min(connect_timeout, check_interval)``, as today."""
        return min(self.connect_timeout, self.check_interval)

    @property
    def transition_interval(self) -> float:
        """Seconds between checks while a server is going UP or DOWN (haproxy ``fastinter``)."""
        return self.check_interval if self.fastinter is None else self.fastinter

    @property
    def down_interval(self) -> float:
        """Seconds between checks while a server is fully DOWN (haproxy ``downinter``)."""
        return self.check_interval if self.downinter is None else self.downinter

    @property
    def check_proxy(self) -> ProxyVersion:
        """The PROXY header health checks send: none unless ``check_send_proxy``.

        Then it is ``send_proxy``'s version, or v1 when the service sends none, as haproxy's
        ``check-send-proxy`` does; a v2 check sends the LOCAL command.
        """
        if not self.check_send_proxy:
            return ProxyVersion.NONE
        return ProxyVersion.V1 if self.send_proxy is ProxyVersion.NONE else self.send_proxy


KEYS: tuple[str, ...] = tuple(field.name for field in attrs.fields(ServicePolicy))
"""Every policy key, in the order the stats page lists them."""

_FIELDS = {field.name: field for field in attrs.fields(ServicePolicy)}


def show(key: str, value: object) -> str:
    """``value`` of ``key`` as the docs and the stats page write it: ``2s``, ``v2``, ``-``."""
    shown: str = _FIELDS[key].metadata[_SHOW](value)
    return shown


class Source(enum.Enum):
    """Where a setting came from, from weakest to strongest."""

    DEFAULT = "built-in default"
    COMMAND_LINE = "command line"
    FILE_DEFAULTS = "services file [defaults]"
    REGISTRY = "registry options"
    FILE_SERVICE = "services file"


@attrs.frozen
class Origin:
    """Where one value came from: its source, and the file line or registry key that said it.

    ``where`` is ``path:line`` for the services file, the ``options`` key for the registry, the
    option's name for the command line; ``table`` is the services file table
    (``[services."jwilder/*"]``).
    """

    source: Source
    where: str = ""
    table: str = ""

    def __str__(self) -> str:
        if self.source is Source.DEFAULT:
            return self.source.value
        if self.source is Source.COMMAND_LINE:
            return f"command line {self.where}"
        if self.source is Source.REGISTRY:
            return f"registry {self.where}"
        return f"{self.where} {self.table}"


@attrs.frozen
class Setting:
    """One key's value, already parsed, and where it came from."""

    value: Any
    origin: Origin


@attrs.frozen
class Layer:
    """What one source says about a service: some of the keys, each with its origin."""

    settings: Mapping[str, Setting] = attrs.field(factory=dict)


class PolicyError(ValueError):
    """A source's settings could not be used; ``str()`` is the one line to log.

    ``key`` is the key the line is about, when there is one, so that a caller can say where
    that key was written.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def describe(raw: object) -> str:
    """An outside value as TOML and JSON write it (``"30x"``, ``true``), cut to a log line."""
    try:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(raw)
    return clip(text)


def parse_setting(key: str, raw: object) -> Any:
    """The value of ``key`` parsed from ``raw``; a :class:`PolicyError` names key and value."""
    field = _FIELDS.get(key)
    if field is None:
        close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise PolicyError(f"unknown key {describe(key)}{hint}", key)
    try:
        return field.metadata[_PARSE](raw)
    except ValueError as error:
        raise PolicyError(f"{key} {error}, got {describe(raw)}", key) from None


def parse_layer(raw: Mapping[str, object], origin: Callable[[str], Origin]) -> Layer:
    """Parse every key of one table or object; the first bad one rejects all of them.

    ``origin(key)`` says where each key was written.  The error names the first bad key (in
    the order written) and counts the others, so fixing one does not hide the next.
    """
    settings: dict[str, Setting] = {}
    problems: list[PolicyError] = []
    for key, value in raw.items():
        try:
            settings[key] = Setting(parse_setting(key, value), origin(key))
        except PolicyError as error:
            problems.append(error)
    if problems:
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise PolicyError(f"{problems[0]}{suffix}", problems[0].key)
    return Layer(settings)
