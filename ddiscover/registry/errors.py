"""The errors of the registry clients, each one line when printed.

:class:`RegistryError` and its subclasses are all the watch loop and the registrar ever see
from a client; the others are raised inside the clients and turned into one of those.
"""

from __future__ import annotations

from hyperlink import URL


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


class RegistryError(Exception):
    """etcd could not be read; ``str()`` is one line naming the endpoint and the problem.

    ``code`` is etcd's error code when its reply had one (v2 ``errorCode``, v3 gRPC ``code``).
    """

    def __init__(self, endpoint: URL, problem: str, code: int | None = None) -> None:
        super().__init__(endpoint, problem)
        self.endpoint = endpoint
        self.problem = problem
        self.code = code

    def __str__(self) -> str:
        return f"etcd {self.endpoint.to_text()}: {self.problem}"


class RegistryUnavailable(RegistryError):  # noqa: N818 (the name is the contract)
    """The endpoint did not answer usefully (refused, timed out, 5xx, cut off, not JSON)."""


class IndexCleared(RegistryError):  # noqa: N818 (the name is the contract)
    """etcd no longer has the history asked for (v2 errorCode 401, v3 compaction): list again."""


class MalformedError(ValueError):
    """A response body etcd would not send; the message says what was wrong."""


class BodyTooLargeError(Exception):
    """The body grew past the size cap, so the connection was aborted."""


class HeadersTimeoutError(Exception):
    """No response headers came within the request timeout, so the request was cancelled."""


class TLSFileError(ValueError):
    """A TLS file that cannot be used; ``which`` is the :class:`TLSFiles` field naming it."""

    def __init__(self, which: str, path: str, problem: str) -> None:
        super().__init__(which, path, problem)
        self.which = which
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"etcd {self.which} {self.path!r} {self.problem}"
