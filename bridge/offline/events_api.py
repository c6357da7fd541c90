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
``bridge.offline.events``; a bad request never stops the server.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge import archive as archive_file
from bridge.core.errors import BridgeError
from bridge.core.failure import EXECUTED_VERSION
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


async def _read(request: web.Request) -> bytes | web.Response:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        logger.warning("%s %s: request body over %d bytes", request.method, request.path, MAX_BODY)
        return web.Response(status=413, headers={"x-amzn-RequestId": str(uuid.uuid4())})


async def handle_events(request: web.Request) -> web.Response:
    """``POST /``: one EventBridge operation, named by ``X-Amz-Target``."""
    target = request.headers.get("X-Amz-Target", "")
    operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
    handler = OPERATIONS.get(operation)
    if handler is None:
        logger.warning("unknown operation %r", target)
        return _error("UnknownOperationException", f"Unknown operation {target!r}")
    body = await _read(request)
    if isinstance(body, web.Response):
        return body
    try:
        params = json.loads(body) if body.strip() else {}
        if not isinstance(params, dict):
            raise ValueError("the body must be a JSON object")
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
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
    body = await _read(request)
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
        event = json.loads(body) if body.strip() else {}
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
        runner = web.AppRunner(make_app(self.bus, self.runtime), access_log=None)
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
