"""A local WebSocket gateway that behaves like an AWS API Gateway WebSocket API.

The bridge Lambdas in ``bridge/lambdas`` are the code that runs in AWS; offline they
must see the same events and get the same answers, or code that works locally breaks
in the cloud. So this gateway reproduces what those handlers can observe:

* ``ws://HOST:PORT/{stage}`` only; ``$connect`` runs *before* the handshake completes
  and can refuse it; ``$disconnect`` runs after a close from either side.
* Lambda proxy events with the ``requestContext`` fields API Gateway sends.
* Route selection by ``$request.body.action`` with ``$default`` as the fallback, the
  ``Forbidden`` / ``Internal server error`` replies AWS sends to the client, and the
  handler's returned ``body`` sent back (a two-way route, simplified).
* The quotas: 128 KB messages, 32 KB frames (close 1009), idle timeout and maximum
  connection age (close 1001), integration timeout.
* The ``@connections`` management API (POST / GET / DELETE) on the *same* port, so
  boto3's ``apigatewaymanagementapi`` client works with
  ``endpoint_url="http://HOST:PORT/{stage}"``, including ``GoneException`` (410).
* Optional IAM (SigV4 pre-signed URL) authorization of ``$connect``, with any number of
  key pairs, each standing for one principal (:class:`SigningKey`), reported in
  ``requestContext.identity`` as API Gateway reports an IAM caller.

Not reproduced: IAM policy evaluation and signing of the management API (requests to
``@connections`` are accepted unsigned), Lambda/JWT authorizers, request/response
mapping templates and route response selection, API keys and throttling, and
permessage-deflate (the server does not negotiate compression, so sizes on the wire
equal message sizes).

It runs on aiohttp because one port must speak both WebSocket and plain HTTP (the
management API); the ``websockets`` server cannot answer an HTTP POST.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import json
import logging
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from bridge.core import apigw
from bridge.core.apigw import CONNECT, DEFAULT, DISCONNECT
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.failure import format_timestamp
from bridge.core.names import DEFAULT_REGION, LOCAL_ACCOUNT
from bridge.offline.frame_limit import FrameScanner
from bridge.offline.ports import listen
from bridge.offline.sigv4 import SignatureError, strip_auth_params, verify_presigned
from bridge.offline.supervisor import Halted, Supervise, report_death

log = logging.getLogger(__name__)

Invoke = Callable[[str, dict], Awaitable[Any]]
"""``(route_key, lambda_proxy_event) -> handler result``; raises when the handler fails."""

#: The API id AWS would assign; handlers only ever echo it back.
API_ID = "offline000"
#: Close code and reason API Gateway uses for idle and over-age connections.
GOING_AWAY = (WSCloseCode.GOING_AWAY, "Going away")
INBOX_LIMIT = 100  # messages of one connection waiting for its handler
#: RFC 6455 "no status received": what a close frame without a code is reported as.
NO_STATUS = 1005
_ID_ALPHABET = string.ascii_letters + string.digits
_CLOSE_WAIT_SECONDS = 2.0
#: What API Gateway closes with when it fails on its side (here: no frame-size guard).
INTERNAL_ERROR = (WSCloseCode.INTERNAL_ERROR, "Internal server error")


def new_id() -> str:
    """An id shaped like API Gateway's (15 characters and ``=``).

    Alphanumeric only, so ids survive URL paths without escaping surprises.
    """
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def _iso(epoch: float) -> str:
    """ISO 8601 with milliseconds, as the management API returns timestamps."""
    return format_timestamp(datetime.fromtimestamp(epoch, UTC))


def _json_response(status: int, payload: Mapping[str, Any] | None, **headers: str) -> web.Response:
    body = b"" if payload is None else json.dumps(payload).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _error(status: int, error_type: str, message: str) -> web.Response:
    """An error botocore's rest-json parser maps to ``client.exceptions.<error_type>``."""
    return _json_response(status, {"message": message}, **{"x-amzn-ErrorType": error_type})


@dataclass
class _Connection:
    """Everything the gateway knows about one client, from upgrade request to close."""

    info: apigw.Connection  # what every proxy event of this connection repeats
    last_active: float = field(default_factory=time.time)
    ws: web.WebSocketResponse | None = None
    # Bounded: a client sending faster than its handler runs is slowed down (the reader
    # stops reading, TCP pushes back) instead of queueing without limit in memory.
    inbox: asyncio.Queue[aiohttp.WSMessage | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=INBOX_LIMIT)
    )
    close_code: int | None = None
    close_reason: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.info.connection_id

    def touch(self) -> None:
        """Record activity either way: it resets the idle timeout and feeds ``LastActiveAt``."""
        self.last_active = time.time()

    def set_close(self, code: int, reason: str) -> None:
        """Keep the first close cause; later ones (echoes of our own close) don't overwrite it."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason


@dataclass
class _Outcome:
    """How one integration call ended: its value, or why it has none."""

    result: Any = None
    failure: str | None = None  # "error" or "timeout"


#: The aiohttp release line that the frame-size guard was written and tested against.
AIOHTTP_TESTED = "3.14"
#: The private parts of aiohttp that the guard uses. aiohttp has no public hook for frame
#: sizes. Every error about these parts names them, so that a failure after an aiohttp
#: upgrade says where to look.
FRAME_HOOK = (
    "`RequestHandler._payload_parser.feed_data` / `WebSocketResponse._reader` "
    "(installed from `WebSocketResponse._post_start`, with `RequestHandler._message_tail`)"
)


class FrameHookError(RuntimeError):
    """aiohttp's private parser hook is not the one the frame-size guard was written for."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"aiohttp changed its private WebSocket parser hook {FRAME_HOOK}: {detail}; "
            f"the gateway's frame-size guard needs updating (tested with aiohttp "
            f"{AIOHTTP_TESTED}, running aiohttp {aiohttp.__version__})"
        )


def frame_hook(protocol: object, response: object) -> tuple[Any, Any]:
    """Return aiohttp's payload parser and message queue for a connection just upgraded.

    The guard stands in for the parser, so it needs the parser's exact interface,
    ``feed_data(data) -> (eof, tail)`` and ``feed_eof()``. It fails the queue through
    ``set_exception(exc)``. Raises :class:`FrameHookError`, naming the part, when
    anything is missing or has another shape.
    """
    parser = getattr(protocol, "_payload_parser", None)
    if parser is None:
        raise FrameHookError("`RequestHandler._payload_parser` is not set after the upgrade")
    problem = _parser_problem(type(parser))
    if problem:
        raise FrameHookError(problem)
    queue = getattr(response, "_reader", None)
    if queue is None:
        raise FrameHookError("`WebSocketResponse._reader` is not set after the upgrade")
    if not callable(getattr(queue, "set_exception", None)):
        raise FrameHookError(f"{type(queue).__qualname__} (`_reader`) has no set_exception()")
    return parser, queue


def _parser_problem(parser_type: type) -> str | None:
    """What keeps the guard from standing in for this parser type, or None."""
    name = parser_type.__qualname__
    if not callable(getattr(parser_type, "feed_eof", None)):
        return f"{name} (`_payload_parser`) has no feed_eof()"
    feed_data = getattr(parser_type, "feed_data", None)
    if not callable(feed_data):
        return f"{name} (`_payload_parser`) has no feed_data()"
    try:
        signature = inspect.signature(feed_data)
    except (TypeError, ValueError):
        return f"the signature of {name}.feed_data cannot be read"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    kinds = [p.kind for p in signature.parameters.values()]
    if len(kinds) != 2 or any(kind not in positional for kind in kinds):
        return f"{name}.feed_data{signature} no longer takes just (self, data)"
    return None


class _FrameSizeGuard:
    """aiohttp's WebSocket payload parser, with a :class:`FrameScanner` in front of it.

    aiohttp's ``max_msg_size`` limits whole (reassembled) messages. API Gateway also caps
    every single frame at 32 KB, and a client that sends a 40 KB message in one frame
    runs into that cap. This object has the parser's interface, so aiohttp's protocol
    feeds it the raw stream. The scanner decides which bytes go on to the real parser.
    A data frame over the limit fails the reader's queue with 1009, just as aiohttp's
    own size check does, and ends the stream.
    """

    def __init__(self, inner: Any, queue: Any, limit: int) -> None:
        self._inner = inner
        self._queue = queue
        self._scanner = FrameScanner(limit)
        self._failed = False

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        passed = self._scanner.feed(bytes(data))
        # Nothing passed: a header is still incomplete. The real parser could not use it yet.
        result: tuple[bool, bytes] = self._inner.feed_data(passed) if passed else (False, b"")
        too_big = self._scanner.too_big
        if too_big is None:
            return result
        self._failed = True
        self._queue.set_exception(WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, too_big.reason))
        return True, b""

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _GatewaySocket(web.WebSocketResponse):
    """aiohttp's WebSocket response with the frame-size guard installed at upgrade time.

    The guard is installed inside ``_post_start``, right after aiohttp sets its parser
    and before any await, so every byte read after the 101 response is checked. Bytes
    that a client sent before it read the 101 response wait in the protocol's tail.
    They are taken out first and fed through the guard too, so the guard never starts
    in the middle of a frame.

    :attr:`guard_error` is None once the guard is in place. The gateway refuses to
    serve a socket without the guard (see :meth:`Gateway._close_unguarded`).
    """

    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_frame_bytes = max_frame_bytes
        self.guard_error: FrameHookError | None = FrameHookError(
            "`WebSocketResponse._post_start` was not called by prepare()"
        )

    def _post_start(self, request: web.BaseRequest, protocol: Any, writer: Any) -> None:
        proto = request.protocol
        tail = getattr(proto, "_message_tail", None)
        if isinstance(tail, bytes | bytearray):
            proto._message_tail = b""  # fed through the guard below, not by set_parser()
        super()._post_start(request, protocol, writer)
        try:
            if not isinstance(tail, bytes | bytearray):
                raise FrameHookError("`RequestHandler._message_tail` is missing or not bytes")
            parser, queue = frame_hook(proto, self)
        except FrameHookError as exc:
            self.guard_error = exc
            return
        guard = _FrameSizeGuard(parser, queue, self._max_frame_bytes)
        proto._payload_parser = guard
        self.guard_error = None
        if tail:
            eof, _ = guard.feed_data(tail)
            if eof:  # what the protocol's data_received() does with a parser's eof
                proto.close()


# -- who may sign $connect ------------------------------------------------------------

#: IAM principals a key can stand for (what API Gateway reports as ``userArn``): a user,
#: the account root, an assumed role's session (SSO) or a federated user.
_PRINCIPAL_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):(?P<service>iam|sts)::(?P<account>\d{12}):"
    r"(?P<resource>root|user/(?:[\w+=,.@-]+/)*[\w+=,.@-]+"
    r"|assumed-role/(?:[\w+=,.@-]+/)*[\w+=,.@-]+/[\w+=,.@-]+|federated-user/[\w+=,.@-]+)"
)
_ACCESS_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")  # no "/": it would split the credential scope


@dataclass(frozen=True)
class SigningKey:
    """A key pair the gateway accepts on ``$connect``, and the principal it stands for.

    Without ``principal_arn`` the key is an IAM user known only by its key, as
    :meth:`apigw.IamCaller.for_access_key` describes (``user/{access key}`` in the local
    account, its key as principal id). With one, ``caller``/``user`` are ids in AWS's
    shapes derived from the ARN alone, so two keys of one principal report the same
    principal (as in AWS, where an SSO refresh changes the key, never the principal).
    """

    access_key: str
    secret_key: str
    principal_arn: str | None = None

    def caller(self) -> apigw.IamCaller:
        """What ``requestContext.identity`` reports for a request this key signed."""
        if self.principal_arn is None:
            return apigw.IamCaller.for_access_key(self.access_key, LOCAL_ACCOUNT)
        match = _PRINCIPAL_ARN.fullmatch(self.principal_arn)
        if match is None:
            raise ValidationError(f"not an IAM principal ARN: {self.principal_arn!r}")
        return apigw.IamCaller(
            access_key=self.access_key,
            account_id=match["account"],
            principal_id=_principal_id(match["account"], match["resource"], self.principal_arn),
            user_arn=self.principal_arn,
        )


def _principal_id(account: str, resource: str, arn: str) -> str:
    """A stable stand-in for the unique id AWS gives a principal, in AWS's shape for it
    (``AIDA…`` for a user, ``AROA…:session`` for an assumed role, the account for root)."""
    if resource == "root":
        return account
    kind, _, rest = resource.partition("/")
    if kind == "federated-user":
        return f"{account}:{rest}"
    if kind == "assumed-role":
        role, _, session = rest.rpartition("/")
        return f"AROA{_digest(f'{account}:role/{role}')}:{session}"
    return f"AIDA{_digest(arn)}"


def _digest(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:17]


def parse_signing_key(text: str, option: str = "--iam-key") -> SigningKey:
    """``KEY:SECRET[:PRINCIPAL_ARN]`` (an ARN holds colons itself: only the first two
    split). Errors name the key, never the secret: the line may end up in a CI log."""
    key, colon, rest = text.partition(":")
    secret, _, arn = rest.partition(":")
    shown = f"{option} {key}:…" if key and colon else option  # no ":": maybe all secret
    if not colon or not _ACCESS_KEY.fullmatch(key):
        raise ValidationError(
            f"{shown}: expected KEY:SECRET[:PRINCIPAL_ARN], KEY of letters, digits, - and _"
        )
    if not secret or any(c.isspace() for c in secret):
        raise ValidationError(f"{shown}: expected KEY:SECRET[:PRINCIPAL_ARN], a non-empty SECRET")
    if arn and not _PRINCIPAL_ARN.fullmatch(arn):
        raise ValidationError(
            f"{shown}: {arn!r} is not an IAM principal ARN (arn:aws:iam::ACCOUNT:user/NAME, "
            "…:root, arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION or …:federated-user/NAME)"
        )
    return SigningKey(key, secret, arn or None)


def _credential_key(raw_query: str) -> str:
    """The access key a pre-signed URL names (``X-Amz-Credential=KEY/…``), or ``""``."""
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name == "X-Amz-Credential":
            return value.partition("/")[0]
    return ""


class Gateway:
    """One stage of a WebSocket API plus its ``@connections`` management API, on one port.

    ``invoke(route_key, event)`` runs the integration (the Lambda) for the routes listed
    in ``routes``; a route missing there behaves as a route without integration in AWS
    (no ``$connect`` route: everyone may connect; no ``$default``: unmatched messages get
    ``Forbidden``). Timeouts and size limits default to API Gateway's quotas and are
    parameters so tests can shrink them. With ``iam_auth`` the ``$connect`` URL must be
    SigV4-signed for ``region`` with one of ``keys`` (or ``credentials``, an access key
    id and secret standing for the IAM user of that key); the key's principal is the
    caller every event of the connection reports. ``name`` and ``port_option`` say which
    API this is in log lines and in a port-in-use error; ``api_id`` is what its events
    carry as ``requestContext.apiId``.

    Each connection's worker (its messages, in order) and watchdog (its timeouts) are
    tasks handed to ``supervise`` (offline's supervisor: a death breaks the local cloud);
    one that dies also closes its connection with 1011, so no socket stays open with
    nobody handling its messages.
    """

    def __init__(
        self,
        *,
        stage: str,
        invoke: Invoke,
        routes: Iterable[str],
        host: str = "127.0.0.1",
        port: int = 3001,
        idle_timeout: float = 600.0,
        max_connection_age: float = 7200.0,
        iam_auth: bool = False,
        credentials: tuple[str, str] | None = None,
        keys: Iterable[SigningKey] = (),
        region: str = DEFAULT_REGION,
        max_message_bytes: int = 128 * 1024,
        max_frame_bytes: int = 32 * 1024,
        integration_timeout: float = 29.0,
        name: str = "gateway",
        port_option: str = "--ws-port",
        api_id: str = API_ID,
        supervise: Supervise = report_death,
    ) -> None:
        if not stage or "/" in stage:
            raise BridgeError(f"invalid stage name {stage!r}")
        signing = [*([SigningKey(*credentials)] if credentials else []), *keys]
        self._keys = {key.access_key: key for key in signing}
        if len(self._keys) != len(signing):
            raise BridgeError("two signing keys have the same access key id")
        if iam_auth and not self._keys:
            raise BridgeError("iam_auth needs credentials (access key id, secret access key)")
        self._callers = {key.access_key: key.caller() for key in signing}  # bad ARN: now
        self.name = name
        self.port_option = port_option
        self.api_id = api_id
        self.stage = stage
        self.host = host
        self.region = region
        self.routes = frozenset(routes)
        self._message_routes = self.routes - {CONNECT, DISCONNECT}  # chosen by body.action
        self.idle_timeout = idle_timeout
        self.max_connection_age = max_connection_age
        self.iam_auth = iam_auth
        self.max_message_bytes = max_message_bytes
        self.max_frame_bytes = max_frame_bytes
        self.integration_timeout = integration_timeout
        self._invoke_fn = invoke
        self._supervise = supervise
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._connections: dict[str, _Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._port is None:
            raise RuntimeError("the gateway is not started")
        return self._port

    @property
    def url(self) -> str:
        """What WebSocket clients connect to: ``ws://HOST:PORT/STAGE``."""
        return f"ws://{self.host}:{self.port}/{self.stage}"

    @property
    def endpoint_url(self) -> str:
        """``http://HOST:PORT``; boto3's management client needs this plus ``/STAGE``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; a port in use is a user error, reported as one BridgeError."""
        app = web.Application(client_max_size=self.max_message_bytes * 4)
        conn_path = f"/{self.stage}/@connections/{{connection_id}}"
        app.router.add_get(f"/{self.stage}", self._handle_upgrade)
        app.router.add_post(conn_path, self._handle_post)
        app.router.add_get(conn_path, self._handle_get)
        app.router.add_delete(conn_path, self._handle_delete)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown_path)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._port = await listen(runner, self.host, self._requested_port, self.port_option)
        self._runner = runner
        log.info("%s listening on %s (stage %s)", self.name, self.url, self.stage)

    async def stop(self) -> None:
        """Close every socket (each runs ``$disconnect``), then the server."""
        connections = list(self._connections.values())
        await asyncio.gather(
            *(self._close(c, *GOING_AWAY, why="gateway stopping") for c in connections),
            return_exceptions=True,
        )
        for conn in connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), self.integration_timeout + 1)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        """Start a background task and keep a reference so it is neither lost nor leaked;
        supervised, so its death is reported (``what`` names it)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._supervise(task, f"the {self.name}'s {what}")
        return task

    async def _invoke(self, route: str, event: dict[str, Any]) -> _Outcome:
        """Call the integration with API Gateway's timeout; log exactly one line for it.

        A failing handler's traceback rides on that same line (``exc_info``) rather than
        a second record, so the log stays one line per invocation to grep.
        """
        ctx = event["requestContext"]
        started = time.monotonic()
        error: BaseException | None = None
        try:
            result = await asyncio.wait_for(self._invoke_fn(route, event), self.integration_timeout)
        except TimeoutError:
            outcome = _Outcome(failure="timeout")
        except Halted as exc:  # offline is going down: the client is answered, no blame
            log.info("invoke %s connection=%s: not run: %s", route, ctx["connectionId"], exc)
            return _Outcome(failure="error")
        except Exception as exc:
            error = exc
            outcome = _Outcome(failure="error")
        else:
            outcome = _Outcome(result=result)
        status = outcome.failure or (
            outcome.result.get("statusCode") if isinstance(outcome.result, dict) else None
        )
        log.log(
            logging.WARNING if outcome.failure else logging.INFO,
            "invoke %s connection=%s request=%s -> %s in %.0f ms%s",
            route,
            ctx["connectionId"],
            ctx["requestId"],
            status,
            (time.monotonic() - started) * 1000,
            f": {error!r}" if error else "",
            exc_info=error,
        )
        return outcome

    # -- the WebSocket side ----------------------------------------------------------

    async def _handle_upgrade(self, request: web.Request) -> web.StreamResponse:
        """Authorize, run ``$connect``, upgrade, then serve the connection until it closes."""
        if not web.WebSocketResponse().can_prepare(request).ok:
            return self._refuse(request, 426, "Upgrade Required", "not a WebSocket upgrade")
        caller: apigw.IamCaller | None = None
        if self.iam_auth:
            try:
                caller = self._verify_signature(request)
            except SignatureError as exc:
                return self._refuse(request, 403, "Forbidden", f"IAM auth: {exc}")
        conn = self._new_connection(request, caller)
        query = list(request.rel_url.query.items())
        if self.iam_auth:
            query = strip_auth_params(query)
        refusal, protocols = await self._run_connect(conn, query)
        if refusal is not None:
            return refusal
        ws = _GatewaySocket(
            max_frame_bytes=self.max_frame_bytes,
            max_msg_size=self.max_message_bytes + 1,  # aiohttp refuses sizes >= the limit
            compress=False,
            timeout=_CLOSE_WAIT_SECONDS,
            protocols=protocols,
        )
        await ws.prepare(request)
        conn.ws = ws
        if ws.guard_error is not None:
            await self._close_unguarded(conn, ws, ws.guard_error)
            return ws
        self._connections[conn.id] = conn
        try:
            # The reading loop is a supervised task like the connection's worker and
            # watchdog: were it to die, the supervisor says so (not aiohttp, with a
            # traceback), and $disconnect still runs.
            reader = self._spawn(self._serve(conn, ws), "connection reader")
            await asyncio.gather(reader, return_exceptions=True)
        finally:
            self._connections.pop(conn.id, None)
            await self._finish(conn)
        return ws

    async def _close_unguarded(
        self, conn: _Connection, ws: web.WebSocketResponse, error: FrameHookError
    ) -> None:
        """Close 1011 a socket that the frame-size guard could not be installed on.

        Serving it would accept frames that API Gateway closes with 1009, so code that
        works offline would break in the cloud. The error is logged once per connection,
        naming aiohttp's hook. ``$connect`` has already run, so ``$disconnect`` runs too,
        as after any other close.
        """
        log.error("closing connection %s with 1011: %s", conn.id, error)
        conn.set_close(*INTERNAL_ERROR)
        try:
            await ws.close(code=INTERNAL_ERROR[0], message=INTERNAL_ERROR[1].encode())
        finally:
            await self._finish(conn)

    def _verify_signature(self, request: web.Request) -> apigw.IamCaller:
        """The principal of the key that signed the URL; SignatureError says why not.

        The key is the one the URL names. A URL naming no key we know is checked against
        any of ours, so that the verifier words every refusal (unsigned, unknown key).
        """
        raw_query = request.rel_url.raw_query_string
        named = _credential_key(raw_query)
        key = self._keys.get(named) or next(iter(self._keys.values()))
        verify_presigned(
            method=request.method,
            raw_path=request.rel_url.raw_path,
            raw_query=raw_query,
            headers=request.headers,
            access_key=key.access_key,
            secret_key=key.secret_key,
            region=self.region,
        )
        return self._callers[key.access_key]

    def _new_connection(self, request: web.Request, caller: apigw.IamCaller | None) -> _Connection:
        """Capture the upgrade request as API Gateway would pass it on (with X-Forwarded-*)."""
        peer = request.remote or "127.0.0.1"
        headers = list(request.headers.items())
        present = {k.lower() for k, _ in headers}
        for name, value in (
            ("X-Forwarded-For", peer),
            ("X-Forwarded-Port", str(self.port)),
            ("X-Forwarded-Proto", request.scheme),
        ):
            if name.lower() not in present:
                headers.append((name, value))
        info = apigw.Connection(
            connection_id=new_id(),
            stage=self.stage,
            domain_name=request.headers.get("Host") or f"{self.host}:{self.port}",
            api_id=self.api_id,
            connected_at=time.time(),
            source_ip=peer,
            user_agent=request.headers.get("User-Agent"),
            headers=tuple(headers),
            caller=caller,
        )
        return _Connection(info=info, last_active=info.connected_at)

    async def _run_connect(
        self, conn: _Connection, query: list[tuple[str, str]]
    ) -> tuple[web.Response | None, tuple[str, ...]]:
        """Run ``$connect``: the HTTP refusal (or None), and the subprotocol it accepted.

        A ``Sec-WebSocket-Protocol`` header in the handler's response selects the
        subprotocol, which is how API Gateway lets ``$connect`` negotiate one. A handler
        that returns nothing accepts the connection.
        """
        if CONNECT not in self.routes:
            return None, ()
        event = apigw.connect_event(conn.info, request_id=new_id(), now=time.time(), query=query)
        outcome = await self._invoke(CONNECT, event)
        if outcome.failure == "timeout":
            return _json_response(504, {"message": "Endpoint request timed out"}), ()
        if outcome.failure:
            return _json_response(500, {"message": "Internal server error"}), ()
        result = outcome.result if isinstance(outcome.result, dict) else {}
        try:
            status = int(result.get("statusCode", 200))
        except (TypeError, ValueError):
            status = 502
        if not 200 <= status < 300:
            refused = status if status >= 400 else 403
            log.info("refused connection %s: $connect returned %s", conn.id, status)
            return _json_response(refused, {"message": "Forbidden"}), ()
        headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
        protocol = headers.get("sec-websocket-protocol")
        return None, (protocol,) if protocol else ()

    async def _serve(self, conn: _Connection, ws: web.WebSocketResponse) -> None:
        """Read messages in order while a worker handles them and a watchdog enforces time."""
        worker = self._spawn(self._closing_on_death(conn, self._work), "connection worker")
        watchdog = self._spawn(self._closing_on_death(conn, self._watch), "watchdog")
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    conn.touch()
                    await conn.inbox.put(msg)
                elif msg.type is WSMsgType.CLOSE:
                    code = msg.data or NO_STATUS
                    conn.set_close(code, msg.extra or _client_close_reason(code))
                    break
                elif msg.type is WSMsgType.ERROR:
                    self._note_error(conn, msg.data)
                    break
                else:  # CLOSING / CLOSED: we closed it, or the transport is gone
                    break
        finally:
            watchdog.cancel()
            if not ws.closed:
                await ws.close()
            conn.set_close(ws.close_code or WSCloseCode.ABNORMAL_CLOSURE, "Connection lost")
            await conn.inbox.put(None)
            # Its death, if it died, is the supervisor's to report, not the request's.
            await asyncio.gather(worker, return_exceptions=True)

    async def _closing_on_death(
        self, conn: _Connection, work: Callable[[_Connection], Awaitable[None]]
    ) -> None:
        """``work(conn)``; if it dies of an exception, the exception goes on to the
        supervisor at once and the socket is closed with 1011 (the reader then ends).
        The close is a task of its own: closing cancels the watchdog, which would turn
        its death into a cancellation if it were still in here."""
        try:
            await work(conn)
        except Exception:
            self._spawn(
                self._close(conn, *INTERNAL_ERROR, why="its handling failed"),
                "close of a failed connection",
            )
            raise

    def _note_error(self, conn: _Connection, exc: BaseException) -> None:
        """An oversize message/frame or a protocol error: aiohttp already sent the close."""
        code = exc.code if isinstance(exc, WebSocketError) else WSCloseCode.ABNORMAL_CLOSURE
        reason = str(exc.args[1]) if isinstance(exc, WebSocketError) and len(exc.args) > 1 else ""
        conn.set_close(code, reason or str(exc))
        log.info("closed connection %s with %s: %s", conn.id, code, conn.close_reason)

    async def _watch(self, conn: _Connection) -> None:
        """Close with 1001 once the connection is idle too long or older than its maximum age."""
        while True:
            now = time.time()
            idle_at = conn.last_active + self.idle_timeout
            age_at = conn.info.connected_at + self.max_connection_age
            if now >= age_at:
                why = "maximum connection age reached"
                break
            if now >= idle_at:
                why = "idle timeout"
                break
            await asyncio.sleep(min(idle_at, age_at) - now)
        await self._close(conn, *GOING_AWAY, why=why)

    async def _close(self, conn: _Connection, code: int, reason: str, *, why: str) -> None:
        """Server-side close: remember the cause for ``$disconnect``, then close the socket."""
        if conn.ws is None or conn.ws.closed:
            return
        conn.set_close(code, reason)
        log.info("closing connection %s with %s: %s", conn.id, code, why)
        await conn.ws.close(code=code, message=reason.encode())

    async def _work(self, conn: _Connection) -> None:
        """Handle one connection's messages strictly in arrival order, one at a time."""
        while (msg := await conn.inbox.get()) is not None:
            await self._dispatch(conn, msg)

    def _select_route(self, msg: aiohttp.WSMessage) -> str | None:
        """``$request.body.action`` if it names a route, else ``$default`` if there is one."""
        if msg.type is WSMsgType.TEXT:
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = None
            action = body.get("action") if isinstance(body, dict) else None
            if isinstance(action, str) and action in self._message_routes:
                return action
        return DEFAULT if DEFAULT in self.routes else None

    async def _dispatch(self, conn: _Connection, msg: aiohttp.WSMessage) -> None:
        """Invoke the selected route and answer the client the way API Gateway does."""
        route = self._select_route(msg)
        if route is None:
            request_id = new_id()
            log.info("refused message on connection %s: no matching route", conn.id)
            await self._send_status(conn, "Forbidden", request_id)
            return
        request_id = new_id()
        event = apigw.message_event(
            conn.info,
            route_key=route,
            body=msg.data,  # str for a text frame, bytes for a binary one (base64 in the event)
            request_id=request_id,
            message_id=new_id(),
            now=time.time(),
        )
        outcome = await self._invoke(route, event)
        if outcome.failure == "timeout":
            await self._send_status(conn, "Endpoint request timed out", request_id)
        elif outcome.failure:
            await self._send_status(conn, "Internal server error", request_id)
        elif isinstance(outcome.result, dict) and outcome.result.get("body") is not None:
            body = outcome.result["body"]
            await self._send(conn, body if isinstance(body, str) else json.dumps(body))

    async def _send_status(self, conn: _Connection, message: str, request_id: str) -> None:
        await self._send(
            conn,
            json.dumps({"message": message, "connectionId": conn.id, "requestId": request_id}),
        )

    async def _send(self, conn: _Connection, data: str | bytes) -> bool:
        """Send one message; False if the socket is gone (the reply is dropped, as in AWS)."""
        ws = conn.ws
        if ws is None or ws.closed:
            return False
        try:
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_str(data)
        except (ConnectionError, RuntimeError):
            return False
        conn.touch()
        return True

    async def _finish(self, conn: _Connection) -> None:
        """Run ``$disconnect`` after the socket is closed, whoever closed it."""
        try:
            if DISCONNECT in self.routes:
                event = apigw.disconnect_event(
                    conn.info,
                    request_id=new_id(),
                    now=time.time(),
                    status_code=conn.close_code,
                    reason=conn.close_reason or "",
                )
                await self._invoke(DISCONNECT, event)
        finally:
            conn.closed.set()

    def _refuse(self, request: web.Request, status: int, message: str, why: str) -> web.Response:
        log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, why)
        return _json_response(status, {"message": message})

    # -- the management API (@connections) -------------------------------------------

    def _live(self, request: web.Request) -> _Connection | None:
        conn = self._connections.get(request.match_info["connection_id"])
        if conn is None or conn.ws is None or conn.ws.closed:
            return None
        return conn

    def _gone(self, request: web.Request) -> web.Response:
        connection_id = request.match_info["connection_id"]
        log.info("%s @connections/%s -> 410 GoneException", request.method, connection_id)
        return _error(410, "GoneException", f"connection {connection_id} is gone")

    async def _handle_post(self, request: web.Request) -> web.Response:
        """PostToConnection: the body becomes a text frame if it is UTF-8, else a binary one."""
        data = await _read_limited(request, self.max_message_bytes)
        if data is None:
            log.info("POST @connections -> 413 PayloadTooLargeException")
            return _error(
                413,
                "PayloadTooLargeException",
                f"message exceeds {self.max_message_bytes} bytes",
            )
        conn = self._live(request)
        if conn is None:
            return self._gone(request)
        try:
            payload: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            payload = data
        if not await self._send(conn, payload):
            return self._gone(request)
        log.info("POST @connections/%s -> 200 (%d bytes)", conn.id, len(data))
        return web.Response(status=200)

    async def _handle_get(self, request: web.Request) -> web.Response:
        """GetConnection, with the wire names botocore maps to ConnectedAt/Identity/LastActiveAt."""
        conn = self._live(request)
        if conn is None:
            return self._gone(request)
        log.info("GET @connections/%s -> 200", conn.id)
        return _json_response(
            200,
            {
                "connectedAt": _iso(conn.info.connected_at),
                "identity": {
                    "sourceIp": conn.info.source_ip,
                    "userAgent": conn.info.user_agent or "",
                },
                "lastActiveAt": _iso(conn.last_active),
            },
        )

    async def _handle_delete(self, request: web.Request) -> web.Response:
        """DeleteConnection: close the socket (``$disconnect`` follows) and answer 204."""
        conn = self._live(request)
        if conn is None:
            return self._gone(request)
        log.info("DELETE @connections/%s -> 204", conn.id)
        # Gone from this moment: a POST racing the close below already gets 410.
        self._connections.pop(conn.id, None)
        self._spawn(
            self._close(conn, WSCloseCode.OK, "Connection deleted", why="DELETE"),
            "close of a deleted connection",
        )
        return web.Response(status=204)

    async def _handle_unknown_path(self, request: web.Request) -> web.Response:
        """Anything else is a 404 that says which stage this gateway serves."""
        return self._refuse(
            request,
            404,
            f"Not found: this gateway serves stage {self.stage!r} at {self.url} "
            f"and {self.endpoint_url}/{self.stage}/@connections/{{id}}",
            "unknown path or stage",
        )


def _client_close_reason(code: int) -> str:
    """The reason API Gateway reports when the client's close frame carried none."""
    if code == NO_STATUS:
        return "Client-side close frame status not set"
    return ""


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """Read the body, or None once it exceeds ``limit`` (without buffering the excess)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = [
    "AIOHTTP_TESTED",
    "API_ID",
    "FRAME_HOOK",
    "FrameHookError",
    "Gateway",
    "Invoke",
    "SigningKey",
    "frame_hook",
    "new_id",
    "parse_signing_key",
]
