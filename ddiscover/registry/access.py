"""How to reach etcd, beyond its URLs: which API, which TLS files, which user.

Plain values, so the configuration can hold them without importing the HTTP or TLS stack;
:mod:`ddiscover.registry.tls` turns :class:`TLSFiles` into a TLS policy.
"""

from __future__ import annotations

import attrs

APIS = ("auto", "v2", "v3")
"""The values of ``--etcd-api``."""


@attrs.frozen
class TLSFiles:
    """PEM files for ``https://`` endpoints: the CA to trust, and our client certificate."""

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


@attrs.frozen
class Credentials:
    """An etcd user: basic auth on v2, a token from ``/v3/auth/authenticate`` on v3."""

    user: str
    password: str = attrs.field(repr=False)


@attrs.frozen
class EtcdAccess:
    """How to reach etcd, beyond its URLs: which API, which TLS files, which user."""

    api: str = "auto"
    tls: TLSFiles = attrs.field(factory=TLSFiles)
    credentials: Credentials | None = None
