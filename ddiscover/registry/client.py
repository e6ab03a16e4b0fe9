"""The request layer every etcd client of ddiscover shares: :class:`EtcdHTTP`.

Both :class:`~ddiscover.registry.etcd2.EtcdV2Client` and
:class:`~ddiscover.registry.etcd3.EtcdV3Client` send through it, and so does the registrar:
failover between endpoints, bounded bodies, basic auth for v2 and token auth for v3.
:func:`build_http_client` makes the production treq client, with TLS client certificates when
the endpoints are ``https://``.

Every request is bounded twice on the injected clock, both times by ``Deferred.addTimeout``:
once until the response headers arrive, and once on the body.  Bodies are read by
:class:`~ddiscover.registry.body.BodyReader`, which aborts the connection when the body is too
slow, too big, or no longer wanted, so cancelling a call never leaves a socket or a timer
behind.

The values, errors and helpers the clients share live in their own modules (``values``,
``errors``, ``failures``, ``body``, ``tls``, ``decoding``, ``access``); the names other
packages import from here are re-exported below until those packages import them from there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from ddiscover._log import make_logger
from ddiscover.registry.access import Credentials, TLSFiles
from ddiscover.registry.body import BodyReader
from ddiscover.registry.decoding import b64, body_text, decode_object, field, text_field
from ddiscover.registry.errors import (
    BodyTooLargeError,
    HeadersTimeoutError,
    IndexCleared,
    MalformedError,
    RegistryError,
    RegistryUnavailable,
)
from ddiscover.registry.failures import NETWORK_ERRORS, describe
from ddiscover.registry.tls import tls_policy
from ddiscover.registry.values import Change, RegistryClient, Reply

__all__ = [
    "GRPC_UNAUTHENTICATED",
    "Change",
    "Credentials",
    "EtcdHTTP",
    "HTTPClientLike",
    "IndexCleared",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "TLSFiles",
    "b64",
    "build_http_client",
    "etcd_index",
]

log = make_logger()

_T = TypeVar("_T")

GRPC_UNAUTHENTICATED = 16
"""The gRPC code of a v3 reply whose auth token is invalid (usually: it expired)."""


class HTTPClientLike(Protocol):
    """The part of :class:`treq.client.HTTPClient` ddiscover uses (``StubTreq`` has it too)."""

    def request(
        self,
        method: str,
        url: str,
        /,
        *,
        data: bytes | dict[str, str] | None,
        headers: Headers,
        timeout: float | None,
        unbuffered: bool,
        reactor: Any,
    ) -> Deferred[Any]:
        """Start any request; ``data`` is a body, or a form when it is a mapping."""


def _cancelled(error: BaseException) -> bool:
    """Whether a request failed because it was cancelled, at whatever stage it was in.

    Cancelled while connecting, treq fails with ``ConnectingCancelledError``; while waiting
    for the response, with ``ResponseNeverReceived([CancelledError])``.
    """
    if isinstance(error, CancelledError | ConnectingCancelledError):
        return True
    return isinstance(error, ResponseFailed | RequestTransmissionFailed) and any(
        reason.check(CancelledError) for reason in error.reasons
    )


def _headers_timeout(result: _T, timeout: float) -> _T:
    """``addTimeout``'s ``onTimeoutCancel``: whatever the cancel became is a headers timeout."""
    if isinstance(result, Failure) and _cancelled(result.value):
        raise HeadersTimeoutError(timeout)
    return result


def etcd_index(response: IResponse) -> int | None:
    """The ``X-Etcd-Index`` header as a number, if the response has a usable one."""
    values = response.headers.getRawHeaders(b"x-etcd-index")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def basic_auth(credentials: Credentials | None) -> Headers:
    """The headers of a v2 request: HTTP basic auth when there are credentials."""
    if credentials is None:
        return Headers()
    pair = f"{credentials.user}:{credentials.password}".encode()
    return Headers({b"authorization": [b"Basic " + base64.b64encode(pair)]})


def build_http_client(
    reactor: IReactorTCP, tls: TLSFiles, connect_timeout: float
) -> tuple[Any, HTTPConnectionPool]:
    """A treq client for etcd and the pool whose cached connections the caller closes on stop."""
    from treq.client import HTTPClient  # noqa: PLC0415 (keeps this module light to import)

    pool = HTTPConnectionPool(reactor, persistent=True)
    agent = Agent(
        reactor, contextFactory=tls_policy(tls), connectTimeout=connect_timeout, pool=pool
    )
    return HTTPClient(agent), pool


def v3_error(body: bytes) -> tuple[int | None, str]:
    """The gRPC ``code`` and a one-line message of a v3 gateway error body (3.4 to 3.6)."""
    try:
        error = decode_object(body)
    except MalformedError:
        return None, body_text(body)
    code = error.get("code")
    return (code if isinstance(code, int) else None), text_field(error, "message")


class EtcdHTTP:
    """Requests to etcd over ``endpoints``, sticking to the one that works.

    After a :class:`RegistryUnavailable` the next request goes to the next endpoint.  With
    ``credentials``, v2 requests carry basic auth and v3 requests a token, fetched on first use
    and fetched again when etcd says it is invalid (gRPC code 16).
    """

    def __init__(
        self,
        http: HTTPClientLike,
        clock: IReactorTime,
        endpoints: Sequence[URL],
        *,
        request_timeout: float,
        credentials: Credentials | None = None,
        max_body: int = 64 * 1024 * 1024,
        forget_connections: Callable[[], object] = lambda: None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.http = http
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_body = max_body
        self._endpoints = tuple(endpoints)
        self._current = 0
        self._credentials = credentials
        self._token: str | None = None
        self._forget_connections = forget_connections

    @property
    def endpoint(self) -> URL:
        """The endpoint the next request goes to: the last one that worked, or the next to try."""
        return self._endpoints[self._current]

    def unavailable(
        self, endpoint: URL, problem: str, code: int | None = None
    ) -> RegistryUnavailable:
        """Note that ``endpoint`` failed, so the next request tries the next one, on a new
        connection.

        The kept-alive connections are dropped too: after a reply that was not what it said
        (a body longer than its Content-Length leaves bytes behind, and Twisted returns the
        connection to its pool all the same), the next request must not go out on one.
        """
        self._forget_connections()
        if self.endpoint == endpoint:
            self._current = (self._current + 1) % len(self._endpoints)
            self._token = None
        return RegistryUnavailable(endpoint, problem, code)

    async def send(
        self,
        method: str,
        path: Sequence[str],
        *,
        query: Sequence[tuple[str, str]] = (),
        data: bytes | dict[str, str] | None = None,
        headers: Headers | None = None,
    ) -> tuple[URL, IResponse]:
        """Send a request to the current endpoint; the response once its headers are in.

        Without ``headers``, v2 basic auth is added when there are credentials.
        """
        endpoint = self.endpoint
        url = endpoint.child(*path).replace(query=tuple(query)).to_uri().to_text()
        # The headers timeout is ours, not treq's ``timeout=``: Deferred.addTimeout tells it
        # apart from the caller's cancel (_headers_timeout runs only when the timer fired).
        requested = self.http.request(
            method,
            url,
            data=data,
            headers=basic_auth(self._credentials) if headers is None else headers,
            timeout=None,
            unbuffered=True,
            reactor=self.clock,
        ).addTimeout(self.request_timeout, self.clock, onTimeoutCancel=_headers_timeout)
        try:
            response: IResponse = await requested
        except HeadersTimeoutError:
            raise self.unavailable(
                endpoint, f"no response within {self.request_timeout:g}s"
            ) from None
        except (*NETWORK_ERRORS, ConnectingCancelledError) as e:
            if _cancelled(e):
                raise CancelledError() from None  # by the caller: not the endpoint's fault
            raise self.unavailable(endpoint, describe(e)) from None
        return endpoint, response

    async def body(self, endpoint: URL, response: IResponse) -> bytes:
        """Read a whole body within the request timeout, aborting the connection otherwise."""
        body = await self.body_within(endpoint, response, self.request_timeout)
        if body is None:
            raise self.unavailable(
                endpoint, f"response not received within {self.request_timeout:g}s"
            )
        return body

    async def body_within(
        self, endpoint: URL, response: IResponse, timeout: float
    ) -> bytes | None:
        """Read a whole body; ``None``, with the connection aborted, if it takes over ``timeout``.

        A body over ``max_body`` bytes, or cut off, is :class:`RegistryUnavailable`.
        """
        reader = BodyReader(self.max_body)
        response.deliverBody(reader)
        try:
            return await reader.done.addTimeout(timeout, self.clock)
        except DeferredTimeoutError:
            return None
        except BodyTooLargeError:
            raise self.unavailable(
                endpoint, f"response body is over {self.max_body} bytes"
            ) from None
        except NETWORK_ERRORS as e:
            raise self.unavailable(endpoint, f"response cut off: {describe(e)}") from None

    def discard(self, response: IResponse) -> None:
        """Abort the connection of a response whose body is not wanted."""
        reader = BodyReader(0)
        response.deliverBody(reader)
        reader.done.addErrback(lambda _: None).cancel()

    async def call(
        self,
        method: str,
        path: Sequence[str],
        *,
        query: Sequence[tuple[str, str]] = (),
        data: bytes | dict[str, str] | None = None,
    ) -> Reply:
        """A complete v2 request and its reply (5xx replies are :class:`RegistryUnavailable`)."""
        endpoint, response = await self.send(method, path, query=query, data=data)
        reply = Reply(response.code, etcd_index(response), await self.body(endpoint, response))
        if reply.code >= 500:
            raise self.unavailable(endpoint, f"HTTP {reply.code}")
        return reply

    async def v3_headers(self) -> Headers:
        """The headers of a v3 request: JSON, and the auth token when there are credentials."""
        headers = Headers({b"content-type": [b"application/json"]})
        if self._credentials is not None:
            if self._token is None:
                self._token = await self._authenticate(self._credentials)
            headers.setRawHeaders(b"authorization", [self._token.encode()])
        return headers

    def forget_token(self) -> None:
        """Drop the v3 token, so the next request authenticates again."""
        self._token = None

    async def _authenticate(self, credentials: Credentials) -> str:
        body = json.dumps({"name": credentials.user, "password": credentials.password})
        endpoint, response = await self.send(
            "POST",
            ("v3", "auth", "authenticate"),
            data=body.encode(),
            headers=Headers({b"content-type": [b"application/json"]}),
        )
        reply = await self.body(endpoint, response)
        if response.code != 200:
            raise self.v3_failure(endpoint, response.code, reply, "authenticating")
        try:
            token: str = field(decode_object(reply), "token", str)
        except MalformedError as e:
            raise self.unavailable(endpoint, f"bad authenticate reply: {e}") from None
        log.debug(
            "etcd {endpoint}: authenticated as {user}",
            endpoint=endpoint.to_text(),
            user=credentials.user,
        )
        return token

    def v3_failure(self, endpoint: URL, status: int, body: bytes, doing: str) -> RegistryError:
        """The error for a v3 reply that is not a success.

        An invalid token (code 16: it expired) is forgotten, so the next request fetches one.
        """
        code, text = v3_error(body)
        problem = f"{doing}: HTTP {status}" + (f" code {code}" if code is not None else "")
        if text:
            problem += f": {text}"
        if code == GRPC_UNAUTHENTICATED:
            self.forget_token()
        if status >= 500:
            return self.unavailable(endpoint, problem, code)
        return RegistryError(endpoint, problem, code)

    async def send_v3(self, path: str, *requests: Mapping[str, Any]) -> tuple[URL, IResponse]:
        """POST ``requests`` to the v3 gateway (``path`` like ``kv/range``); see :meth:`send`.

        Several requests go in one body, one JSON object per line, as the watch call takes
        them (a ``create_request`` and a ``progress_request``).
        """
        return await self.send(
            "POST",
            ("v3", *path.split("/")),
            data=b"\n".join(json.dumps(request).encode() for request in requests),
            headers=await self.v3_headers(),
        )

    async def open_v3(self, path: str, *requests: Mapping[str, Any]) -> tuple[URL, IResponse]:
        """POST to the v3 gateway; the 200 response, its body not read yet.

        Any other status is raised as :meth:`v3_failure`; an invalid token (code 16: it
        expired) is fetched again and the call repeated once first.
        """
        for last in (False, True):
            endpoint, response = await self.send_v3(path, *requests)
            if response.code == 200:
                break
            body = await self.body(endpoint, response)
            failure = self.v3_failure(endpoint, response.code, body, path)
            if last or failure.code != GRPC_UNAUTHENTICATED:
                raise failure
        return endpoint, response

    async def v3(self, path: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """POST one unary v3 gateway call (``path`` like ``kv/range``) and decode its reply.

        An invalid token (code 16: it expired) is fetched again and the call repeated once.
        """
        endpoint, response = await self.open_v3(path, request)
        body = await self.body(endpoint, response)
        try:
            return decode_object(body)
        except MalformedError as e:
            raise self.unavailable(endpoint, f"bad {path} reply: {e}") from None
