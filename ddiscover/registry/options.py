"""The options ``twistd ddiscover`` and ``twistd ddiscover-register`` share: etcd and logging.

API choice, TLS files and credentials are checked here, where they are parsed, so a bad file or
a missing password stops the command with one line naming the option.  A password may come from
``--etcd-password-file`` or ``$ETCD_PASSWORD``, so it never has to be on the command line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hyperlink import URL
from twisted.python import usage

from ddiscover._log import LEVELS
from ddiscover.registry.access import APIS, Credentials, EtcdAccess, TLSFiles
from ddiscover.registry.errors import TLSFileError
from ddiscover.registry.tls import tls_policy

__all__ = [
    "ETCD_OPTIONS",
    "LOG_LEVEL_OPTION",
    "EtcdAccess",
    "check_log_level",
    "parse_access",
    "parse_endpoints",
    "parse_etcd",
]

_AUTHORITY = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})/?$")

LOG_LEVEL_OPTION: list[Any] = [
    "log-level",
    None,
    "info",
    f"Log level: one of {', '.join(LEVELS)}.",
]

ETCD_OPTIONS: list[list[Any]] = [
    [
        "etcd-api",
        None,
        "auto",
        "etcd API: auto (v2 if the server answers /v2/keys, else v3), v2 or v3.",
    ],
    ["etcd-cafile", None, None, "CA certificate (PEM) that https:// etcd endpoints must match."],
    ["etcd-certfile", None, None, "Client certificate (PEM) for https:// etcd endpoints."],
    ["etcd-keyfile", None, None, "Private key (PEM) of --etcd-certfile, if not in that file."],
    ["etcd-user", None, None, "etcd user (v2: basic auth; v3: token auth)."],
    [
        "etcd-password-file",
        None,
        None,
        "File holding the password of --etcd-user (or set $ETCD_PASSWORD).",
    ],
    [
        "etcd-password",
        None,
        None,
        "Password of --etcd-user; visible to ps, so prefer --etcd-password-file.",
    ],
]


def parse_etcd(raw: str) -> tuple[URL, ...]:
    """Turn ``host:port``, ``http://host:port`` or a comma-separated list of them into URLs."""
    urls = []
    for part in (p.strip() for p in raw.split(",")):
        scheme, sep, authority = part.partition("://")
        if not sep:
            scheme, authority = "http", part
        match = _AUTHORITY.match(authority)
        if scheme not in ("http", "https") or match is None:
            raise usage.UsageError(f"--etcd {part!r} is not host:port or http://host:port")
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise usage.UsageError(f"--etcd {part!r} has port {port}, outside 1-65535")
        urls.append(URL(scheme=scheme, host=match["host"].strip("[]"), port=port))
    return tuple(urls)


def parse_endpoints(options: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[URL, ...]:
    """The ``--etcd`` endpoints, or ``$ETCD_HOST``'s when ``--etcd`` is not given."""
    etcd = options["etcd"] or environ.get("ETCD_HOST", "")
    if not etcd.strip():
        raise usage.UsageError("--etcd is required (or set ETCD_HOST), e.g. 10.0.0.5:2379")
    return parse_etcd(etcd)


def check_log_level(options: Mapping[str, Any]) -> None:
    """``--log-level`` must be one of the known levels."""
    if options["log-level"] not in LEVELS:
        raise usage.UsageError(
            f"--log-level must be one of {', '.join(LEVELS)}, got {options['log-level']!r}"
        )


def _password(options: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    path = options["etcd-password-file"]
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise usage.UsageError(f"--etcd-password-file {path!r} cannot be read: {e}") from None
    return options["etcd-password"] or environ.get("ETCD_PASSWORD") or None


def parse_access(
    options: Mapping[str, Any], environ: Mapping[str, str], endpoints: Sequence[URL]
) -> EtcdAccess:
    """Check the shared etcd options of a parsed command line and return them as one value."""
    api = options["etcd-api"]
    if api not in APIS:
        raise usage.UsageError(f"--etcd-api must be one of {', '.join(APIS)}, got {api!r}")
    tls = TLSFiles(options["etcd-cafile"], options["etcd-certfile"], options["etcd-keyfile"])
    if tls != TLSFiles():
        plain = [u.to_text() for u in endpoints if u.scheme != "https"]
        if plain:
            raise usage.UsageError(f"TLS files are given but {plain[0]} is not https://")
        if tls.keyfile and not tls.certfile:
            raise usage.UsageError("--etcd-keyfile needs --etcd-certfile")
        try:
            tls_policy(tls)
        except TLSFileError as e:
            raise usage.UsageError(f"--etcd-{e.which} {e.path!r} {e.problem}") from None
    user = options["etcd-user"]
    password = _password(options, environ)
    if user and password is None:
        raise usage.UsageError(
            "--etcd-user needs a password: --etcd-password-file, $ETCD_PASSWORD or --etcd-password"
        )
    if not user and (options["etcd-password"] or options["etcd-password-file"]):
        raise usage.UsageError("an etcd password is given without --etcd-user")
    return EtcdAccess(api, tls, Credentials(user, password) if user and password else None)
