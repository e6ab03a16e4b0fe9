"""What every etcd client of ddiscover shares: the values, errors and HTTP plumbing.

Both :class:`~ddiscover.registry.etcd2.EtcdV2Client` and
:class:`~ddiscover.registry.etcd3.EtcdV3Client` satisfy :class:`RegistryClient`, so the watch
loop (:mod:`ddiscover.registry.watcher`) keeps one catalog, one diff, one backoff and one "keep
the last known catalog" rule for both APIs.  :class:`EtcdHTTP` is the request layer both
clients and the registrar share: failover between endpoints, bounded bodies, basic auth for v2
and token auth for v3.  :func:`build_http_client` makes the production treq client, with TLS
client certificates when the endpoints are ``https://``.

Every request is bounded twice on the injected clock: treq's ``timeout=`` until the response
headers arrive, and our own timer on the body.  Bodies are read by :class:`BodyReader`, which
aborts the connection when the body is too slow, too big, or no longer wanted, so cancelling a
call never leaves a socket or a timer behind.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from hyperlink import URL
from OpenSSL.crypto import FILETYPE_PEM
from OpenSSL.crypto import Error as OpenSSLError
from OpenSSL.SSL import Error as TLSError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionClosed
from twisted.internet.interfaces import IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import (
    Certificate,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from ddiscover._log import make_logger
from ddiscover.registry.layout import Entry
from ddiscover.text import CLIP, clip

log = make_logger()

DELETE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})
"""The v2 actions that take a key away."""
_INVALID_AUTH_TOKEN = 16

# What the network, not our code, can make a request fail with.
NETWORK_ERRORS = (
    ConnectError,
    ConnectionClosed,
    ResponseFailed,
    RequestTransmissionFailed,
    OSError,
)


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


@attrs.frozen
class Snapshot:
    """Every leaf key under the prefix, and the etcd index (v3: revision) it was taken at."""

    index: int
    entries: Mapping[str, Entry]


@attrs.frozen
class Change:
    """One change to one key; ``entry`` is the new value for set-like actions, else ``None``.

    v2 actions are etcd's (``set``, ``expire``, ...); v3 ones are ``put`` and ``delete``.
    """

    action: str
    key: str
    is_dir: bool
    entry: Entry | None
    index: int

    @property
    def removes(self) -> bool:
        """Whether the change took ``key`` away (delete, expire or compareAndDelete)."""
        return self.action in DELETE_ACTIONS


ChangeHandler = Callable[[Sequence[Change], int], None]
"""Called with the changes of one etcd revision (possibly none: a progress notification) and
the index the watch has now reached; the next watch starts one past it."""


class RegistryClient(Protocol):
    """What the watch loop needs from an etcd client, whatever its API."""

    @property
    def endpoint(self) -> URL:
        """The endpoint in use."""

    @property
    def api(self) -> str:
        """``"v2"`` or ``"v3"`` (``"auto"`` until detected), for the logs and the page."""

    async def snapshot(self) -> Snapshot:
        """List every key under the prefix."""

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """Report changes from ``index`` on until the stream goes quiet for the watch timeout.

        Raises :class:`IndexCleared` when etcd no longer has ``index``, and
        :class:`RegistryError` when the stream fails.
        """


class MalformedError(ValueError):
    """A response body etcd would not send; the message says what was wrong."""


class BodyTooLargeError(Exception):
    """The body grew past the size cap, so the connection was aborted."""


@attrs.frozen
class Reply:
    """A complete response: status, X-Etcd-Index (if any) and body."""

    code: int
    etcd_index: int | None
    body: bytes


class BodyReader(TwistedProtocol):
    """Collects a response body up to ``limit`` bytes into :attr:`done`.

    Cancelling :attr:`done` (directly, or through ``addTimeout``) aborts the connection, which
    is the only way to stop a long-poll whose headers have already arrived.
    """

    def __init__(self, limit: int) -> None:
        self.done: Deferred[bytes] = Deferred(self._abort)
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []

    def _abort(self, _: Deferred[bytes]) -> None:
        IPushProducer(self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done.errback(BodyTooLargeError())
            self._abort(self.done)
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def _tls_reasons(error: TLSError) -> str:
    """OpenSSL's reasons (``certificate verify failed``, ``tls alert bad certificate``)."""
    queue = error.args[0] if error.args else None
    if isinstance(queue, list):
        reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
        if reasons:
            return "; ".join(reasons)
    return one_line(str(error)) or "no reason given"


def describe(error: BaseException) -> str:
    """A short description of a network failure, looking inside Twisted's wrapper exceptions.

    A failed TLS handshake says so, with OpenSSL's reason: a server that wants a client
    certificate answers ``tls alert bad certificate``, an untrusted server certificate is
    ``certificate verify failed``.
    """
    if isinstance(error, ResponseFailed | RequestTransmissionFailed) and error.reasons:
        tls = [r.value for r in error.reasons if isinstance(r.value, TLSError)]
        if tls:
            return f"TLS handshake failed: {_tls_reasons(tls[0])}"
        inner = "; ".join(one_line(r.getErrorMessage()) or r.type.__name__ for r in error.reasons)
        return f"{type(error).__name__}: {inner}"
    if isinstance(error, TLSError):
        return f"TLS handshake failed: {_tls_reasons(error)}"
    return one_line(str(error)).rstrip(".") or type(error).__name__


class HeadersTimeoutError(Exception):
    """treq cancelled the request because no response headers came within its timeout."""


def _was_cancelled(failure: Failure) -> bool:
    """Whether a request failed because it was cancelled, at whatever stage it was in."""
    if failure.check(CancelledError, ConnectingCancelledError):
        return True
    error = failure.value
    return isinstance(error, ResponseFailed | RequestTransmissionFailed) and any(
        reason.check(CancelledError) for reason in error.reasons
    )


def tell_timeout_from_cancel(requested: Deferred[Any]) -> Deferred[Any]:
    """Wrap ``requested`` so treq's header timeout is told apart from the caller's cancel.

    Both cancel the same Deferred.  Through the wrapper, the caller's cancel stays a
    ``CancelledError`` and treq's becomes :class:`HeadersTimeoutError`.
    """
    by_caller = False

    def cancel(_: Deferred[Any]) -> None:
        nonlocal by_caller
        by_caller = True
        requested.cancel()

    outer: Deferred[Any] = Deferred(cancel)

    def settle(result: object) -> None:
        if outer.called:
            return
        if by_caller:
            outer.errback(CancelledError())
        elif isinstance(result, Failure):
            outer.errback(HeadersTimeoutError() if _was_cancelled(result) else result)
        else:
            outer.callback(result)

    requested.addBoth(settle)
    return outer


def field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    """``obj[name]``, which must be a ``kind`` (and not a bool posing as an int)."""
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedError(f"field {name!r} is missing or not {kind.__name__}")
    return value


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


def _json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words, for a message."""
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


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


def etcd_index(response: IResponse) -> int | None:
    """The ``X-Etcd-Index`` header as a number, if the response has a usable one."""
    values = response.headers.getRawHeaders(b"x-etcd-index")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


# -- configuration of the connection to etcd -----------------------------------------------


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


def basic_auth(credentials: Credentials | None) -> Headers:
    """The headers of a v2 request: HTTP basic auth when there are credentials."""
    if credentials is None:
        return Headers()
    pair = f"{credentials.user}:{credentials.password}".encode()
    return Headers({b"authorization": [b"Basic " + base64.b64encode(pair)]})


@implementer(IPolicyForHTTPS)
class _ClientCertificatePolicy:
    """Verifies the server against ``trust_root`` and presents ``certificate`` to it."""

    def __init__(self, trust_root: Certificate | None, certificate: PrivateCertificate) -> None:
        self._trust_root = trust_root
        self._certificate = certificate

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:  # noqa: N802 (Twisted's)
        return optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trust_root,
            clientCertificate=self._certificate,
        )


class TLSFileError(ValueError):
    """A TLS file that cannot be used; ``which`` is the :class:`TLSFiles` field naming it."""

    def __init__(self, which: str, path: str, problem: str) -> None:
        super().__init__(which, path, problem)
        self.which = which
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"etcd {self.which} {self.path!r} {self.problem}"


def _read(which: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSFileError(which, path, f"cannot be read: {e.strerror}") from None


def _certificate(which: str, path: str) -> Certificate:
    try:
        return Certificate.loadPEM(_read(which, path))
    except OpenSSLError:
        raise TLSFileError(which, path, "holds no PEM certificate") from None


def _load(files: TLSFiles) -> tuple[Certificate | None, PrivateCertificate | None]:
    """The CA to trust and our certificate with its key, each checked on its own."""
    trust = _certificate("cafile", files.cafile) if files.cafile else None
    if not files.certfile:
        return trust, None
    certificate = _certificate("certfile", files.certfile)
    which, path = ("keyfile", files.keyfile) if files.keyfile else ("certfile", files.certfile)
    try:
        key = KeyPair.load(_read(which, path), FILETYPE_PEM)
    except OpenSSLError:
        raise TLSFileError(which, path, "holds no PEM private key") from None
    if not certificate.getPublicKey().matches(key):
        raise TLSFileError(which, path, f"is not the key of {files.certfile!r}")
    return trust, PrivateCertificate.fromCertificateAndKeyPair(certificate, key)


def tls_policy(files: TLSFiles) -> IPolicyForHTTPS:
    """The TLS policy for ``files``; raises :class:`TLSFileError` on an unusable file."""
    trust, certificate = _load(files)
    if certificate is not None:
        return _ClientCertificatePolicy(trust, certificate)
    if trust is None:
        return BrowserLikePolicyForHTTPS()
    return BrowserLikePolicyForHTTPS(trustRoot=trust)


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


# -- the request layer shared by the clients and the registrar -----------------------------


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

    @property
    def endpoint(self) -> URL:
        """The endpoint the next request goes to: the last one that worked, or the next to try."""
        return self._endpoints[self._current]

    def unavailable(
        self, endpoint: URL, problem: str, code: int | None = None
    ) -> RegistryUnavailable:
        """Note that ``endpoint`` failed, so the next request tries the next one."""
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
        requested = self.http.request(
            method,
            url,
            data=data,
            headers=basic_auth(self._credentials) if headers is None else headers,
            timeout=self.request_timeout,
            unbuffered=True,
            reactor=self.clock,
        )
        try:
            response: IResponse = await tell_timeout_from_cancel(requested)
        except HeadersTimeoutError:
            raise self.unavailable(
                endpoint, f"no response within {self.request_timeout:g}s"
            ) from None
        except NETWORK_ERRORS as e:
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
        if code == _INVALID_AUTH_TOKEN:
            self.forget_token()
        if status >= 500:
            return self.unavailable(endpoint, problem, code)
        return RegistryError(endpoint, problem, code)

    async def send_v3(self, path: str, request: Mapping[str, Any]) -> tuple[URL, IResponse]:
        """POST ``request`` to the v3 gateway (``path`` like ``kv/range``); see :meth:`send`."""
        return await self.send(
            "POST",
            ("v3", *path.split("/")),
            data=json.dumps(request).encode(),
            headers=await self.v3_headers(),
        )

    async def _v3_once(self, path: str, request: Mapping[str, Any]) -> tuple[URL, int, bytes]:
        endpoint, response = await self.send_v3(path, request)
        return endpoint, response.code, await self.body(endpoint, response)

    async def v3(self, path: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """POST one unary v3 gateway call (``path`` like ``kv/range``) and decode its reply.

        An invalid token (code 16: it expired) is fetched again and the call repeated once.
        """
        endpoint, status, body = await self._v3_once(path, request)
        if status != 200:
            failure = self.v3_failure(endpoint, status, body, path)
            if failure.code != _INVALID_AUTH_TOKEN:
                raise failure
            endpoint, status, body = await self._v3_once(path, request)
        if status != 200:
            raise self.v3_failure(endpoint, status, body, path)
        try:
            return decode_object(body)
        except MalformedError as e:
            raise self.unavailable(endpoint, f"bad {path} reply: {e}") from None
