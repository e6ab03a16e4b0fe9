"""The etcd options ``twistd ddiscover`` and ``twistd ddiscover-register`` share.

API choice, TLS files and credentials are checked here, where they are parsed, so a bad file or
a missing password stops the command with one line naming the option.  A password may come from
``--etcd-password-file`` or ``$ETCD_PASSWORD``, so it never has to be on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from hyperlink import URL
from twisted.python import usage

from ddiscover.registry.api import APIS
from ddiscover.registry.client import Credentials, TLSFileError, TLSFiles, tls_policy

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


@attrs.frozen
class EtcdAccess:
    """How to reach etcd, beyond its URLs: which API, which TLS files, which user."""

    api: str = "auto"
    tls: TLSFiles = attrs.field(factory=TLSFiles)
    credentials: Credentials | None = None


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
