"""The EventBridge endpoint of the local cloud, and the Lambda Invoke API, on one port.

Speaks the real wire protocols so unmodified tools work against it: boto3,
``aws events put-events --endpoint-url http://127.0.0.1:4010``, the publisher
Lambda with ``AWS_ENDPOINT_URL_EVENTS``; and ``aws lambda invoke`` /
``bridge failures retry`` against the same URL.

* EventBridge: JSON 1.1 — ``POST /`` with ``X-Amz-Target: AWSEvents.<Operation>``.
  Errors are HTTP 400 with ``{"__type": code, "message": text}``, which botocore
  turns into ``ClientError`` with ``Error.Code == code`` (modeled codes such as
  ``ResourceNotFoundException`` also into ``client.exceptions.<code>``).
* Lambda: REST JSON — ``POST /2015-03-31/functions/{FunctionName}/invocations``;
  errors carry their code in the ``x-amzn-ErrorType`` header, as Lambda does.

Requests are **not** authenticated: any credentials, any signature, or none at all
are accepted. The endpoint listens on 127.0.0.1 by default and is for one developer's
machine only. Every refused request is logged as one line on
``bridge.offline.events_api``; a bad request never stops the server.

What a request may hold, beyond AWS's own limits:

* Bodies (EventBridge and Invoke) nest at most :data:`MAX_BODY_DEPTH` (100) levels,
  and so does an entry's ``Detail`` (``bridge.core.events.MAX_DETAIL_DEPTH``; deeper
  fails that entry alone with ``MalformedDetail``). AWS documents no such limit; the
  local one keeps every event within what the Python handling it can recurse through.
* Text UTF-8 cannot carry (a lone surrogate, e.g. the escape ``"\\ud800"``) fails the
  entry it is in: ``MalformedDetail`` in ``Detail``, ``InvalidArgument`` in ``Source``,
  ``DetailType``, ``Resources`` or ``EventBusName``. It would be accepted and then lost
  otherwise: the SQLite archive, DynamoDB and every wire store UTF-8. An Invoke payload
  holding such text is refused (``InvalidRequestContentException``).
* A malformed HTTP request (a header over 8,190 bytes, a body cut short of its
  ``Content-Length``) gets aiohttp's 400, or the connection simply ends when the client
  has gone; either way one warning line, never a traceback (``-v`` adds it).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from bridge import archive as archive_file
from bridge.core.errors import BridgeError
from bridge.core.events import MAX_DETAIL_DEPTH
from bridge.core.failure import EXECUTED_VERSION
from bridge.core.inputs import document_problem, may_hold_surrogates
from bridge.offline.bus import Bus, EventsError
from bridge.offline.ports import listen

if TYPE_CHECKING:
    from bridge.offline.runtime import FunctionRuntime

logger = logging.getLogger(__name__)

JSON_11 = "application/x-amz-json-1.1"
TARGET_PREFIX = "AWSEvents."
DEFAULT_PORT = 4010
MAX_BODY = 8 * 1024 * 1024  # above any legal request; bigger bodies get 413 like AWS
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # Lambda: RequestResponse payload limit
MAX_ASYNC_PAYLOAD = 256 * 1024  # Lambda: Event payload limit
# How deep a request body may nest: a PutEvents body is 3 deep (Details are strings);
# an Invoke body is the event itself, held to the same limit as a bus event's detail.
MAX_BODY_DEPTH = MAX_DETAIL_DEPTH
INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"

Params = dict[str, Any]
Operation = Callable[[Bus, Params], Awaitable[dict[str, Any]]]


# --------------------------------------------------------------------------- wire helpers


def _wire(value: Any) -> Any:
    """JSON 1.1 sends timestamps as epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_response(body: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, default=_wire).encode(),
        content_type=JSON_11,
        headers={"x-amzn-RequestId": str(uuid.uuid4()), **headers},
    )


def _error(code: str, message: str, status: int = 400) -> web.Response:
    return _json_response({"__type": code, "message": message}, status)


def _serialization(message: str) -> EventsError:
    return EventsError("SerializationException", message)


def _parse_body(body: bytes, *, text: bool = False) -> Any:
    """A request body's JSON, or ValueError saying why not: not UTF-8, not JSON, or
    nested deeper than :data:`MAX_BODY_DEPTH` (``json`` itself would raise
    RecursionError past the stack, and the bus would meet the depth again). With
    ``text``, strings holding lone surrogates are refused too.

    Decoded strictly first: ``json.loads(bytes)`` decodes with ``surrogatepass`` and
    would turn UTF-8-encoded surrogates (ED A0 80) into lone surrogates."""
    decoded = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if not decoded.strip():
        return {}
    try:
        value = json.loads(decoded)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_BODY_DEPTH} levels deep") from None
    text = text and may_hold_surrogates(decoded)
    if text or decoded.count("{") + decoded.count("[") > MAX_BODY_DEPTH:  # else no fault
        problem = document_problem(value, MAX_BODY_DEPTH, text=text)
        if problem is not None:
            raise ValueError(problem)
    return value


def _field(params: Params, name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    """One request member, type-checked like the service does (null counts as absent)."""
    value = params.get(name)
    if value is None:
        if required:
            raise EventsError(
                "ValidationException",
                f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' "
                "failed to satisfy constraint: Member must not be null",
            )
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _serialization(f"{name}: unexpected {type(value).__name__}")
    return value


def _time(params: Params, name: str) -> datetime:
    value = _field(params, name, (int, float, str), required=True)
    try:
        return archive_file.from_iso(archive_file.to_iso(value))
    except BridgeError:
        raise _serialization(f"{name}: not a timestamp: {value!r}") from None


def _page(params: Params, items: list[Any], key: str) -> dict[str, Any]:
    """Limit/NextToken pagination over a list (the token is an offset)."""
    token = _field(params, "NextToken", str)
    limit = _field(params, "Limit", int)
    limit = 100 if limit is None else limit
    if not 1 <= limit <= 100:
        raise EventsError(
            "ValidationException",
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
            "constraint: Member must have value between 1 and 100",
        )
    try:
        start = int(token) if token else 0
        if start < 0:
            raise ValueError(token)
    except ValueError:
        raise EventsError("ValidationException", "The NextToken provided is invalid.") from None
    response: dict[str, Any] = {key: items[start : start + limit]}
    if start + limit < len(items):
        response["NextToken"] = str(start + limit)
    return response


# --------------------------------------------------------------------------- operations


async def put_events(bus: Bus, params: Params) -> dict[str, Any]:
    entries = _field(params, "Entries", list, required=True)
    if not all(isinstance(entry, dict) for entry in entries):
        raise _serialization("Entries: every entry must be an object")
    results = bus.put_events(entries)
    failed = [result for result in results if "ErrorCode" in result]
    if failed:
        first = failed[0]
        logger.warning(
            "PutEvents: %d of %d entries failed, first: %s: %s",
            len(failed),
            len(results),
            first["ErrorCode"],
            first["ErrorMessage"],
        )
    return {"FailedEntryCount": len(failed), "Entries": results}


async def describe_event_bus(bus: Bus, params: Params) -> dict[str, Any]:
    bus.check_bus(_field(params, "Name", str))
    return bus.describe()


async def list_event_buses(bus: Bus, params: Params) -> dict[str, Any]:
    prefix = _field(params, "NamePrefix", str) or ""
    buses = [bus.describe()] if bus.name.startswith(prefix) else []
    return _page(params, buses, "EventBuses")


async def list_rules(bus: Bus, params: Params) -> dict[str, Any]:
    bus.check_bus(_field(params, "EventBusName", str))
    rules = bus.list_rules(_field(params, "NamePrefix", str))
    return _page(params, [bus.describe_rule(rule) for rule in rules], "Rules")


async def describe_rule(bus: Bus, params: Params) -> dict[str, Any]:
    name = _field(params, "Name", str, required=True)
    bus.check_bus(_field(params, "EventBusName", str))
    return {**bus.describe_rule(bus.rule(name)), "CreatedBy": bus.account}


async def list_targets_by_rule(bus: Bus, params: Params) -> dict[str, Any]:
    name = _field(params, "Rule", str, required=True)
    bus.check_bus(_field(params, "EventBusName", str))
    return _page(params, bus.targets(bus.rule(name)), "Targets")


async def describe_archive(bus: Bus, params: Params) -> dict[str, Any]:
    return await bus.describe_archive(_field(params, "ArchiveName", str, required=True))


async def list_archives(bus: Bus, params: Params) -> dict[str, Any]:
    archives = await bus.list_archives(
        _field(params, "NamePrefix", str),
        _field(params, "EventSourceArn", str),
        _field(params, "State", str),
    )
    return _page(params, archives, "Archives")


async def start_replay(bus: Bus, params: Params) -> dict[str, Any]:
    destination = _field(params, "Destination", dict, required=True)
    filter_arns = _field(destination, "FilterArns", list)
    if filter_arns is not None and not all(isinstance(arn, str) for arn in filter_arns):
        raise _serialization("Destination.FilterArns: every ARN must be a string")
    return await bus.start_replay(
        _field(params, "ReplayName", str, required=True),
        _field(params, "EventSourceArn", str, required=True),
        _time(params, "EventStartTime"),
        _time(params, "EventEndTime"),
        _field(destination, "Arn", str, required=True),
        filter_arns,
        _field(params, "Description", str) or "",
    )


async def describe_replay(bus: Bus, params: Params) -> dict[str, Any]:
    return bus.describe_replay(_field(params, "ReplayName", str, required=True))


async def list_replays(bus: Bus, params: Params) -> dict[str, Any]:
    replays = bus.list_replays(
        _field(params, "NamePrefix", str),
        _field(params, "State", str),
        _field(params, "EventSourceArn", str),
    )
    return _page(params, replays, "Replays")


async def cancel_replay(bus: Bus, params: Params) -> dict[str, Any]:
    return bus.cancel_replay(_field(params, "ReplayName", str, required=True))


OPERATIONS: dict[str, Operation] = {
    "PutEvents": put_events,
    "DescribeEventBus": describe_event_bus,
    "ListEventBuses": list_event_buses,
    "ListRules": list_rules,
    "DescribeRule": describe_rule,
    "ListTargetsByRule": list_targets_by_rule,
    "DescribeArchive": describe_archive,
    "ListArchives": list_archives,
    "StartReplay": start_replay,
    "DescribeReplay": describe_replay,
    "ListReplays": list_replays,
    "CancelReplay": cancel_replay,
}


# --------------------------------------------------------------------------- handlers


def _bus(request: web.Request) -> Bus:
    return request.app[BUS_KEY]


async def _read(
    request: web.Request, cut_short: Callable[[str], web.Response]
) -> bytes | web.Response:
    """The whole body, or the response that refuses it: 413 over :data:`MAX_BODY`;
    ``cut_short(reason)`` when it ends before its length (the client closed, or the
    chunked encoding broke). Usually nobody is left to read that 400, but the refusal
    is one line in the log, not aiohttp's traceback of a handler that raised."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        logger.warning("%s %s: request body over %d bytes", request.method, request.path, MAX_BODY)
        return web.Response(status=413, headers={"x-amzn-RequestId": str(uuid.uuid4())})
    except (ConnectionError, HttpProcessingError, ClientPayloadError) as error:
        reason = f"the request body ended before it was complete ({_one_line(error)})"
        logger.warning("%s %s: %s", request.method, request.path, reason)
        return cut_short(reason)


async def handle_events(request: web.Request) -> web.Response:
    """``POST /``: one EventBridge operation, named by ``X-Amz-Target``."""
    target = request.headers.get("X-Amz-Target", "")
    operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
    handler = OPERATIONS.get(operation)
    if handler is None:
        logger.warning("unknown operation %r", target)
        return _error("UnknownOperationException", f"Unknown operation {target!r}")
    body = await _read(request, lambda reason: _error("SerializationException", reason))
    if isinstance(body, web.Response):
        return body
    try:
        params = _parse_body(body)
        if not isinstance(params, dict):
            raise ValueError("the body must be a JSON object")
    except ValueError as error:
        logger.warning("%s: SerializationException: malformed JSON body: %s", operation, error)
        return _error("SerializationException", f"Malformed JSON body: {error}")
    try:
        return _json_response(await handler(_bus(request), params))
    except EventsError as error:
        logger.warning("%s: %s: %s", operation, error.code, error.message)
        return _error(error.code, error.message)
    except Exception as error:  # the server keeps serving; the client sees a 500 like AWS's
        logger.error("%s: InternalException: %s: %s", operation, type(error).__name__, error)
        logger.debug("%s failed", operation, exc_info=True)
        return _error("InternalException", f"{type(error).__name__}: {error}", status=500)


def _lambda_error(code: str, message: str, status: int) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"Type": "User", "Message": message}).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _function_arn(bus: Bus, name: str) -> str:
    """The ARN Lambda's "Function not found" message shows for a FunctionName."""
    if name.startswith("arn:"):
        return name
    return f"arn:aws:lambda:{bus.region}:{bus.account}:function:{name}"


async def handle_invoke(request: web.Request) -> web.Response:
    """``POST /2015-03-31/functions/{name}/invocations``: Lambda's Invoke API."""
    runtime: FunctionRuntime | None = request.app[RUNTIME_KEY]
    bus = _bus(request)
    name = request.match_info["name"]
    kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    # the runtime knows a function by its short name, full name or (qualified) ARN
    if runtime is None or not runtime.has_function(name):
        logger.warning("Invoke: ResourceNotFoundException: no function %s", name)
        message = f"Function not found: {_function_arn(bus, name)}"
        return _lambda_error("ResourceNotFoundException", message, 404)
    if kind not in ("RequestResponse", "Event", "DryRun"):
        logger.warning("Invoke %s: invalid invocation type %r", name, kind)
        return _lambda_error(
            "InvalidParameterValueException",
            f"Invalid invocation type {kind!r}: use RequestResponse, Event or DryRun",
            400,
        )
    body = await _read(
        request, lambda reason: _lambda_error("InvalidRequestContentException", reason, 400)
    )
    if isinstance(body, web.Response):
        return body
    limit = MAX_ASYNC_PAYLOAD if kind == "Event" else MAX_SYNC_PAYLOAD
    if len(body) > limit:
        logger.warning("Invoke %s: payload of %d bytes over %d", name, len(body), limit)
        return _lambda_error(
            "RequestTooLargeException",
            f"Request must be smaller than {limit} bytes for the {kind} invocation type",
            413,
        )
    try:
        # The event goes to a worker, maybe into an on_failure record in DynamoDB: text
        # neither can carry is refused here rather than lost on the way.
        event = _parse_body(body, text=True)
    except ValueError as error:
        logger.warning("Invoke %s: InvalidRequestContentException: %s", name, error)
        return _lambda_error(
            "InvalidRequestContentException",
            f"Could not parse request body into json: {error}",
            400,
        )
    if kind == "DryRun":
        return web.Response(status=204)
    try:
        if kind == "Event":
            request_id = runtime.invoke_async(name, event)
            return web.Response(status=202, headers={"x-amzn-RequestId": request_id})
        result = await runtime.invoke(name, event)
    except Exception as error:  # a runtime fault, not the handler's: Lambda says 500
        logger.error("Invoke %s: ServiceException: %s: %s", name, type(error).__name__, error)
        return _lambda_error("ServiceException", f"{type(error).__name__}: {error}", 500)
    headers = {"x-amzn-RequestId": result.request_id, "X-Amz-Executed-Version": EXECUTED_VERSION}
    if result.ok:
        payload = result.payload
    else:
        headers["X-Amz-Function-Error"] = "Unhandled"
        payload = result.error
    return web.Response(
        status=200,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


# --------------------------------------------------------------------------- app & server


def _one_line(error: BaseException) -> str:
    """An exception as one short line (aiohttp's parser errors span several)."""
    if isinstance(error, HttpProcessingError) and error.message:
        text = f"HTTP {error.code}: {' '.join(error.message.split())}"
    else:
        text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's server writes to (``AppRunner(logger=...)``), for what
    happens before or around a handler: a request line or header it cannot parse, a
    client that hangs up. aiohttp logs each with ``logger.exception`` — a traceback
    per malformed request. Here each is one line on our logger: a warning when the
    client is at fault (``HttpProcessingError``, a lost connection), its own level
    otherwise; the traceback only when debugging (``bridge offline -v``)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.pop("exc_info", None)
        if isinstance(exc_info, BaseException):
            error: BaseException | None = exc_info
        elif exc_info:
            error = sys.exc_info()[1]
        else:
            error = None
        if error is None:
            self.logger.log(level, msg, *args, **kwargs)
            return
        if level > logging.WARNING and isinstance(
            error, HttpProcessingError | ConnectionError | ClientPayloadError
        ):
            level = logging.WARNING  # the client's fault, as every refused request here
        text = (str(msg) % args if args else str(msg)) + ": " + _one_line(error)
        debugging = self.logger.isEnabledFor(logging.DEBUG)
        self.logger.log(level, "%s", text, exc_info=error if debugging else None, **kwargs)


BUS_KEY: web.AppKey[Bus] = web.AppKey("bus", Bus)
RUNTIME_KEY: web.AppKey[Any] = web.AppKey("runtime", object)


def make_app(bus: Bus, runtime: FunctionRuntime | None = None) -> web.Application:
    """The aiohttp application: EventBridge at ``POST /``, Lambda Invoke beside it."""
    app = web.Application(client_max_size=MAX_BODY)
    app[BUS_KEY] = bus
    app[RUNTIME_KEY] = runtime
    app.router.add_post("/", handle_events)
    app.router.add_post(INVOKE_PATH, handle_invoke)
    app.router.add_get("/health", handle_health)
    for path in ("/2015-03-31/functions/", "/2015-03-31/functions"):  # clients differ
        app.router.add_get(path, handle_list_functions)
    return app


async def handle_list_functions(request: web.Request) -> web.Response:
    """Lambda's ListFunctions (``aws lambda list-functions``): what runs locally."""
    runtime = request.app[RUNTIME_KEY]
    return _json_response({"Functions": runtime.configurations() if runtime else []})


async def handle_health(request: web.Request) -> web.Response:
    """``GET /health``: is the local cloud up (for scripts that wait for it)."""
    return _json_response({"status": "ok", "bus": request.app[BUS_KEY].name})


class EventsServer:
    """The endpoint on a real port. ``port=0`` picks a free one (see :attr:`port`)."""

    def __init__(
        self,
        bus: Bus,
        runtime: FunctionRuntime | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        self.bus = bus
        self.runtime = runtime
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> EventsServer:
        """Listen; a port already taken ends in :class:`BridgeError` naming it."""
        runner = web.AppRunner(
            make_app(self.bus, self.runtime), access_log=None, logger=ProtocolLog(logger)
        )
        await runner.setup()
        self.port = await listen(runner, self.host, self.port, "--events-port")
        self._runner = runner
        logger.info("EventBridge and Lambda endpoint on %s", self.url)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EventsServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
