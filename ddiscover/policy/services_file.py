"""The host's services file (``--services FILE``): per-service policies in TOML.

::

    [defaults]                  # the operator's defaults for every service
    check_interval = "2s"

    [services."web"]            # one service by its exact name
    balance = "leastconn"

    [services."jwilder/*"]      # or every service a glob matches (fnmatch: * ? [...])
    check = "http"

Keys are those of :class:`~ddiscover.policy.model.ServicePolicy`.  When several tables match a
service, each key is taken from the most specific table that sets it (as ssh_config takes each
parameter from the first ``Host`` block that sets it), so a glob can set what a family of
services shares and an exact table what one of them needs on top.  "More specific" is, in
this order: an exact name beats any glob; then more literal characters (those outside ``*``,
``?`` and ``[...]``); then more single-character wildcards (``?`` and ``[...]``, which match
less than ``*``); then fewer ``*``; then the table written first.
``port`` may only be set under an exact name: the services a glob (or ``[defaults]``) applies
to cannot all listen on one port.

A file that cannot be read, is not TOML, or has one bad key or value is rejected as a whole,
with one line naming the file, the line and the key; :func:`reread` returns that line instead
of raising, so the caller keeps the last good file in force (one bad edit must not drop every
service's policy, as one bad file does in Traefik's file provider).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

import attrs

from ddiscover.policy.model import Layer, Origin, PolicyError, Source, describe, parse_layer
from ddiscover.policy.toml_lines import key_lines, line_of

MAX_BYTES = 1 << 20
"""A services file larger than this (1 MiB) is refused rather than parsed."""

_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


class ServicesFileError(ValueError):
    """The services file was rejected; ``str()`` is the one line to log."""


def specificity(pattern: str) -> tuple[bool, int, int, int]:
    """How specific a name pattern is; a larger tuple is more specific (see the module doc)."""
    literals = singles = stars = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            stars += 1
        elif char == "?":
            singles += 1
        elif char == "[":
            close = _set_end(pattern, index)
            if close < 0:
                literals += 1
            else:
                singles += 1
                index = close
        else:
            literals += 1
        index += 1
    return (stars == singles == 0, literals, singles, -stars)


def _set_end(pattern: str, start: int) -> int:
    """The index of the ``]`` closing the ``[...]`` set at ``start``, as fnmatch reads it."""
    index = start + 1
    if index < len(pattern) and pattern[index] == "!":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1
    close = pattern.find("]", index)
    return close


@attrs.frozen
class ServiceTable:
    """One ``[services."<pattern>"]`` table: the pattern, its settings, its place in the file."""

    pattern: str
    layer: Layer
    order: int

    def matches(self, service: str) -> bool:
        """Whether this table applies to ``service`` (case-sensitive, like service names)."""
        return fnmatch.fnmatchcase(service, self.pattern)

    def rank(self) -> tuple[bool, int, int, int, int]:
        """Sorts tables from least to most specific; earlier tables win ties."""
        return (*specificity(self.pattern), -self.order)


@attrs.frozen
class ServicesFile:
    """A services file that was read and validated as a whole."""

    path: str
    defaults: Layer = attrs.field(factory=Layer)
    tables: tuple[ServiceTable, ...] = ()

    def layers_for(self, service: str) -> tuple[Layer, ...]:
        """The tables that apply to ``service``, least specific first, so the last one wins."""
        matching = sorted((t for t in self.tables if t.matches(service)), key=ServiceTable.rank)
        return tuple(table.layer for table in matching)


def _table_name(pattern: str) -> str:
    return f"[services.{describe(pattern)}]"


def _read_text(path: str) -> str:
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ServicesFileError(f"{path}: cannot be read: {error.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ServicesFileError(f"{path}: is larger than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ServicesFileError(f"{path}:{line}: is not UTF-8 text") from None


def _parse_toml(path: str, text: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = _AT.search(message)
        reason = message[: found.start()] if found else message
        if found and found.group(1):
            where = f"{found.group(1)}:{found.group(2)}"
        else:
            where = str(text.count("\n") + 1)
        raise ServicesFileError(f"{path}:{where}: is not valid TOML: {reason}") from None


def read_services_file(path: str) -> ServicesFile:
    """Read and validate the services file at ``path``; raise :class:`ServicesFileError`."""
    text = _read_text(path)
    document = _parse_toml(path, text)
    lines = key_lines(text)

    def at(*keys: str) -> str:
        line = line_of(lines, keys)
        return path if line is None else f"{path}:{line}"

    def layer(raw: object, keys: tuple[str, ...], source: Source, table: str) -> Layer:
        if not isinstance(raw, Mapping):
            raise ServicesFileError(f"{at(*keys)}: {table} must be a table of keys")
        try:
            return parse_layer(raw, lambda key: Origin(source, at(*keys, key), table))
        except PolicyError as error:
            where = at(*keys, error.key) if error.key is not None else at(*keys)
            raise ServicesFileError(f"{where}: {table} {error}") from None

    for name in document:
        if name not in ("defaults", "services"):
            raise ServicesFileError(
                f"{at(name)}: unknown table {describe(name)}: "
                'a services file has [defaults] and [services."<name>"] tables'
            )
    defaults = layer(
        document.get("defaults", {}), ("defaults",), Source.FILE_DEFAULTS, "[defaults]"
    )
    if "port" in defaults.settings:
        raise ServicesFileError(
            f"{at('defaults', 'port')}: [defaults] port cannot be a default: "
            "every service needs its own port"
        )
    services = document.get("services", {})
    if not isinstance(services, Mapping):
        raise ServicesFileError(f'{at("services")}: services must be [services."<name>"] tables')
    tables = []
    for order, (pattern, raw) in enumerate(services.items()):
        if not pattern:
            raise ServicesFileError(f"{at('services', pattern)}: a service name cannot be empty")
        name = _table_name(pattern)
        table = layer(raw, ("services", pattern), Source.FILE_SERVICE, name)
        entry = ServiceTable(pattern, table, order)
        if "port" in table.settings and not specificity(pattern)[0]:
            raise ServicesFileError(
                f"{at('services', pattern, 'port')}: {name} port needs an exact service name: "
                "the services a glob matches cannot share one port"
            )
        tables.append(entry)
    return ServicesFile(path, defaults, tuple(tables))


def reread(path: str) -> ServicesFile | ServicesFileError:
    """Read ``path`` again: the new file, or the error to log while the last good one stays."""
    try:
        return read_services_file(path)
    except ServicesFileError as error:
        return error
