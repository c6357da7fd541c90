"""`bridge offline`: the whole pipeline in one process, no Docker, no AWS.

DynamoDB (embedded moto server or the user's endpoint) → stream poller → the
publisher Lambda → the EventBridge-compatible bus → subscriber Lambdas (retries,
onFailure) and the SQLite archive; plus the WebSocket gateway of a user's own routes
and the bridge API (a second gateway on its own port: the bridge Lambdas, their table,
the two forward rules), each with its own ``@connections`` endpoint. The Lambda code
is the code AWS runs; only endpoints differ (``AWS_ENDPOINT_URL_*``).

Shutdown order is what makes "nothing lost" true: stop taking writes, publish what
the stream still holds, let running functions finish, flush the archive, and only
then fold the tables' journal into their snapshot and stop the endpoints. A crash
loses nothing the embedded DynamoDB acknowledged: it journals every write before
answering (:mod:`bridge.offline.durable`), and a stream checkpoint moves only past
events the archive holds. Quiet moments fold the journal, so restarts stay quick.

A part that dies under it — the embedded DynamoDB's process, or any long-lived task
(archive writer, poller, autosave, gateway connections, the runtime's log pumps and
async invocations, replays) — *breaks* the run (:mod:`bridge.offline.supervisor`): the
runtime stops invoking at once, the bus takes no more events, and offline stops and
exits with one line naming the part. There is no draining then; what the stream
still holds is published after the restart, and the async invocations that were in
flight are kept in ``./db`` and run again at the next start
(:mod:`bridge.offline.unfinished`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.aws import default_region
from bridge.core.apigw import CONNECT, DEFAULT, DISCONNECT
from bridge.core.errors import BridgeError, ValidationError
from bridge.core.names import (
    BRIDGE_CLIENT_ACTIONS,
    BRIDGE_CONNECT,
    BRIDGE_DISCONNECT,
    BRIDGE_FORWARD,
    BRIDGE_HANDLERS,
    BRIDGE_MESSAGE,
    BRIDGE_RULE_KINDS,
    BUS_NAME,
    LOCAL_ACCOUNT,
    PUBLISHER,
    PUBLISHER_HANDLER,
    bridge_rule_name,
    bridge_rule_pattern,
    bridge_table_name,
    core_table_name,
    function_arn,
    log_table_name,
    rule_arn,
)
from bridge.core.subscriptions import (
    BRIDGE_FORWARD_TIMEOUT,
    BRIDGE_ROUTE_TIMEOUT,
    FunctionSpec,
    Subscriptions,
)
from bridge.offline import unfinished
from bridge.offline.dynamodb import DynamoDBProcess
from bridge.offline.poller import StreamPoller
from bridge.offline.ports import free_port, wait_port_free
from bridge.offline.state import Checkpoints, DatabaseLock, check_database, remove_database
from bridge.offline.supervisor import Supervisor

if TYPE_CHECKING:
    from bridge.offline.bus import Rule
    from bridge.offline.gateway import Gateway, Invoke, SigningKey

log = logging.getLogger(__name__)

# The key the local functions sign with: the embedded endpoint lets it write while
# draining. Any key works against local endpoints; this one is recognisable in logs.
FUNCTIONS_KEY = "bridge-offline"
# $connect URLs of the bridge API (and of the user's API with --iam-auth) may always be
# signed with this key: the printed exports set it. Its principal is
# arn:aws:iam::000000000000:user/local.
SIGNING_CREDENTIALS = ("local", "local")
#: What the bridge API's events carry as ``apiId`` (the user's API has gateway.API_ID).
BRIDGE_API_ID = "offline002"
#: route key -> the bridge function behind it; every other route is bridge-message.
BRIDGE_ROUTE_FUNCTIONS = {CONNECT: BRIDGE_CONNECT, DISCONNECT: BRIDGE_DISCONNECT}
BRIDGE_ROUTES = (CONNECT, DISCONNECT, DEFAULT, *BRIDGE_CLIENT_ACTIONS)
# As the bridge stack configures them: Lambda's async retries of forward (after the
# rule handed the event over), and the description of each rule.
FORWARD_RETRY_ATTEMPTS = 2
FORWARD_MAX_EVENT_AGE_SECONDS = 21_600
_BRIDGE_RULE_DESCRIPTIONS = {
    "live": "Live events (no replay-name) to the bridge",
    "replay": "Replayed events (name this rule in StartReplay's FilterArns) to the bridge",
}
MANAGEMENT_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"
#: The bridge table's TTL attribute (epoch seconds), as in the bridge stack.
BRIDGE_TTL_ATTRIBUTE = "ttl"
#: What a bridge client reads to find the bridge API (printed among the exports).
BRIDGE_URL_VARIABLE = "BRIDGE_WEBSOCKET_URL"
PUBLISHER_FUNCTION = FunctionSpec(
    name=PUBLISHER,
    handler=PUBLISHER_HANDLER,
    pattern=None,
    retry_attempts=0,
    timeout=60,
)


@dataclass
class OfflineOptions:
    stage: str = "local"
    host: str = "127.0.0.1"
    dynamodb_port: int = 8000
    events_port: int = 4010
    ws_port: int = 3001
    dynamodb_endpoint: str | None = None  # the user's own (DynamoDB Local) instead of moto
    db: Path = Path("db")
    region: str = field(default_factory=default_region)  # as every other command
    batch_window: float = 0.0
    idle_timeout: float = 600.0
    max_connection_age: float = 7200.0
    iam_auth: bool = False  # the user's API (ws_port) requires SigV4 on $connect
    bridge: bool = True  # serve the bridge API, its functions, table and rules
    bridge_port: int = 3002
    bridge_iam_auth: bool = True  # False (--no-iam-auth): the bridge API takes anyone
    iam_keys: tuple[SigningKey, ...] = ()  # accepted besides local/local, on both APIs
    autosave: float = 2.0  # seconds of quiet before the journal is folded; 0: never
    fsync: bool = False  # the embedded DynamoDB's journal also survives a power cut
    keep_tables: bool = True  # False: a throwaway cloud (the demo) saves nothing
    ws_routes: dict[str, str] = field(default_factory=dict)  # route key → handler
    aws_like_replays: bool = False  # replays in shuffled 1-minute slices, some late


class LocalCloud:
    """Start with ``await cloud.start()``, stop with ``await cloud.stop()``."""

    def __init__(
        self, options: OfflineOptions, subscriptions: Subscriptions, project_root: Path
    ) -> None:
        self.options = options
        self.subscriptions = subscriptions
        self.project_root = project_root
        self.embedded: DynamoDBProcess | None = None
        self.dynamodb_url = options.dynamodb_endpoint or ""
        self.restored: dict[str, int] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._client: Any = None  # the DynamoDB client, made at start
        self._autosave_task: asyncio.Task[None] | None = None
        self._autosave_stop = asyncio.Event()
        # A part died under us (the embedded DynamoDB, a task): stop, there is no draining.
        self.supervisor = Supervisor()
        self.supervisor.on_break(self._halt)
        self._embedded_stopping = False  # its exit is then no death
        self._reran: list[Any] = []  # invocations the last run left unfinished, run again
        self._cleanups: list[Any] = []  # how to undo what started, in order
        self._lock: DatabaseLock | None = None  # released last, once all else has stopped
        self.bridge_gateway: Gateway | None = None
        self._signing_keys = self.signing_keys()  # a bad --iam-key: refused before any start

    @property
    def broken(self) -> asyncio.Event:
        """Set once a part died under the run (see :mod:`bridge.offline.supervisor`)."""
        return self.supervisor.broken

    @property
    def broken_reason(self) -> str:
        """The one line saying which part died of what."""
        return self.supervisor.reason

    # ------------------------------------------------------------------ endpoints

    @property
    def events_url(self) -> str:
        return f"http://{self.options.host}:{self.options.events_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.options.host}:{self.options.ws_port}/{self.options.stage}"

    @property
    def management_url(self) -> str:
        return f"http://{self.options.host}:{self.options.ws_port}/{self.options.stage}"

    @property
    def bridge_url(self) -> str | None:
        """Where a bridge client connects (``bridge connect --stage local``); None when off."""
        o = self.options
        return f"ws://{o.host}:{o.bridge_port}/{o.stage}" if o.bridge else None

    @property
    def bridge_management_url(self) -> str | None:
        """The bridge API's own ``@connections`` endpoint, which its functions post to."""
        o = self.options
        return f"http://{o.host}:{o.bridge_port}/{o.stage}" if o.bridge else None

    def endpoint_variables(self) -> dict[str, str]:
        """What points boto3 and the AWS CLI at this local cloud."""
        return {
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_url,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.dynamodb_url,
            "AWS_ENDPOINT_URL_EVENTBRIDGE": self.events_url,
            "AWS_ENDPOINT_URL_LAMBDA": self.events_url,
            MANAGEMENT_ENDPOINT_VARIABLE: self.management_url,
            "AWS_DEFAULT_REGION": self.options.region,
        }

    def exported_variables(self) -> dict[str, str]:
        """The endpoints, and where the bridge API is (what the client reads), to print."""
        bridge = {BRIDGE_URL_VARIABLE: self.bridge_url} if self.bridge_url else {}
        return {**self.endpoint_variables(), **bridge}

    def signing_keys(self) -> list[SigningKey]:
        """Every key $connect may be signed with: the printed local pair, then --iam-key's."""
        from bridge.offline.gateway import SigningKey

        local = SigningKey(*SIGNING_CREDENTIALS)
        extra = list(self.options.iam_keys)
        if any(key.access_key == local.access_key for key in extra):
            raise ValidationError(
                f"--iam-key {local.access_key}:…: {local.access_key!r} is the built-in local "
                "key; give another access key id"
            )
        seen: set[str] = set()
        for key in extra:
            if key.access_key in seen:
                raise ValidationError(f"--iam-key {key.access_key}:… is given twice")
            seen.add(key.access_key)
        return [local, *extra]

    def function_environment(self) -> dict[str, str]:
        stage = self.options.stage
        return {
            **self.endpoint_variables(),
            "AWS_REGION": self.options.region,
            "AWS_ACCESS_KEY_ID": FUNCTIONS_KEY,
            "AWS_SECRET_ACCESS_KEY": FUNCTIONS_KEY,
            "DYNAMODB_LOGS_TABLE": log_table_name(stage),
            "DYNAMODB_CORE_TABLE": core_table_name(stage),
            "EVENT_BUS_NAME": BUS_NAME,
            "STAGE": stage,
        }

    def _session(self) -> Any:
        import boto3

        return boto3.Session(
            aws_access_key_id=FUNCTIONS_KEY,
            aws_secret_access_key=FUNCTIONS_KEY,
            region_name=self.options.region,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every part, each after what it needs; a failure undoes what started.

        The order is the pipeline's, from the tables to the poller that feeds the bus;
        each step adds how to undo itself to ``_cleanups``, so the one failure path
        below stops exactly what is running, newest first.
        """
        o = self.options
        if o.bridge and not o.bridge_iam_auth:
            log.warning(
                "--no-iam-auth: the bridge API accepts UNSIGNED connections: anyone who "
                "can reach %s:%s can open a session and read the bus's events",
                o.host,
                o.bridge_port or "(its port)",
            )
        new_database = not Path(o.db).exists()
        lock = await self._lock_database()
        try:
            # A crashed run's ports may still be closing.
            await self._claim_ports(grace=5.0 if lock.stale else 0.0)
            await self._start_dynamodb()
            session = self._session()
            writes_before_clients = await self._open_tables(session)
            await self._start_archive()
            await self._start_functions()
            await self._start_bus()
            await self._rerun_unfinished()
            await self._start_gateway()
            await self._start_bridge_gateway()
            await self._start_poller(session)
            self._start_autosave(writes_before_clients)
        except BaseException:
            await self._stop_started()
            if new_database:  # a start that failed leaves no empty database behind
                remove_database(o.db)  # (still under the lock: no other run is using it)
            self._release_lock()
            raise

    async def _lock_database(self) -> DatabaseLock:
        """Check the database file and take it for this run (released last, at stop)."""
        db = self.options.db
        await asyncio.to_thread(check_database, db)
        lock = self._lock = DatabaseLock(db).acquire()
        if lock.stale:
            log.warning(
                "the last `bridge offline` on %s did not stop cleanly (killed?): every "
                "write its DynamoDB acknowledged is restored, and what it had not "
                "published yet is published now",
                db,
            )
        return lock

    async def _claim_ports(self, grace: float) -> None:
        """Pick free ports where none was given; refuse a port in use before anything
        starts, all of them up front, each naming its option."""
        o = self.options
        o.events_port = o.events_port or free_port(o.host)
        o.ws_port = o.ws_port or free_port(o.host)
        ports = [(o.events_port, "--events-port"), (o.ws_port, "--ws-port")]
        if o.bridge:
            o.bridge_port = o.bridge_port or free_port(o.host)
            ports.append((o.bridge_port, "--bridge-port"))
        if not o.dynamodb_endpoint and o.dynamodb_port:
            ports.append((o.dynamodb_port, "--dynamodb-port"))
        options: dict[int, str] = {}
        for port, option in ports:  # two servers can't share a port: say which two
            if port in options:
                raise ValidationError(f"{options[port]} and {option} are both {port}")
            options[port] = option
        for port, option in ports:
            await asyncio.to_thread(wait_port_free, o.host, port, option, grace)

    async def _start_dynamodb(self) -> None:
        """The embedded DynamoDB (unless the user gave an endpoint), watched for dying."""
        o = self.options
        if o.dynamodb_endpoint:
            return
        self.embedded = DynamoDBProcess(
            o.host,
            o.dynamodb_port,
            FUNCTIONS_KEY,
            db=o.db if o.keep_tables else None,
            region=o.region,
            fsync=o.fsync,
        )
        await asyncio.to_thread(self.embedded.start)
        self._cleanups.append(self._stop_embedded)
        self.dynamodb_url = self.embedded.url
        self.supervisor.add_check(self._embedded_gone)
        watch = self.supervisor.spawn(self._watch_embedded(), "the embedded DynamoDB's watcher")
        self._cleanups.append(watch.cancel)

    async def _open_tables(self, session: Any) -> int:
        """Restore the saved tables (embedded endpoint), create the stage's tables, then
        let clients write; returns how many writes the endpoint had seen before them."""
        from bridge.store import create_tables

        o = self.options
        # One client for the poller and the table creation (boto3 clients are safe
        # to share between threads).
        client = self._client = session.client("dynamodb", endpoint_url=self.dynamodb_url)
        if self.embedded:
            self.restored = self.embedded.restored  # rebuilt by the child before serving
        dynamodb = session.resource("dynamodb", endpoint_url=self.dynamodb_url)
        await asyncio.to_thread(
            create_tables, dynamodb, log_table_name(o.stage), core_table_name(o.stage)
        )
        if o.bridge:
            await asyncio.to_thread(create_bridge_table, client, bridge_table_name(o.stage))
        if not self.embedded:
            return 0  # the user's endpoint takes writes all along; nothing autosaves it
        # Restored, streams on: clients may write now. What is there now is what was
        # restored: the first write of a client (even one waiting at the door) counts
        # as a change to save.
        writes_before_clients = (await asyncio.to_thread(self.embedded.write_counts))[0]
        await asyncio.to_thread(self.embedded.open_writes)
        return writes_before_clients

    async def _start_archive(self) -> None:
        from bridge.archive import ArchiveWriter

        self.archive = await ArchiveWriter(self.options.db).start()
        self.supervisor.watch(self.archive.task, "the archive writer")
        self._cleanups.append(self.archive.close)

    async def _start_functions(self) -> None:
        """The function runtime: the publisher, the subscribers, the WebSocket routes."""
        from bridge.offline.runtime import FunctionRuntime

        o = self.options
        self.runtime = FunctionRuntime(
            [
                PUBLISHER_FUNCTION,
                *self.subscriptions.functions.values(),
                *self._route_functions(),
                *self._bridge_functions(),
            ],
            project_root=self.project_root,
            environment=self.function_environment(),
            stage=o.stage,
            region=o.region,
            account=LOCAL_ACCOUNT,
            supervise=self.supervisor.watch,
            healthy=self.supervisor.healthy,
        )
        await self.runtime.start()
        self._cleanups.append(self.runtime.stop)
        try:
            await self.runtime.warm()
        except Exception as error:  # noqa: BLE001 - Lambda retries init on first use
            log.warning(
                "a function could not be warmed up (it will be tried again when invoked): %s",
                error,
            )

    async def _start_bus(self) -> None:
        """The bus (rules, archive, deliveries to the runtime) and its HTTP endpoint."""
        from bridge.offline.bus import Bus, rules_from
        from bridge.offline.events_api import EventsServer

        o = self.options
        self.bus = Bus(
            rules=[
                *rules_from(self.subscriptions, o.stage, o.region, LOCAL_ACCOUNT),
                *self._bridge_rules(),
            ],
            deliver=self.runtime.invoke_async,
            backlog=self.runtime.backlog,
            archive=self.archive,
            region=o.region,
            account=LOCAL_ACCOUNT,
            supervise=self.supervisor.watch,
            aws_like_replays=o.aws_like_replays,
        )
        self._cleanups.append(self.bus.close)
        self.events = await EventsServer(self.bus, self.runtime, o.host, o.events_port).start()
        self._cleanups.append(self.events.stop)

    async def _start_poller(self, session: Any) -> None:
        """The stream poller, from the saved checkpoints: from here on, items get published."""
        o = self.options
        checkpoints = await asyncio.to_thread(Checkpoints, o.db)
        self._cleanups.append(checkpoints.close)
        self.poller = StreamPoller(
            dynamodb=self._client,
            streams=session.client("dynamodbstreams", endpoint_url=self.dynamodb_url),
            table_name=log_table_name(o.stage),
            invoke=self._publish,
            checkpoints=checkpoints,
            batch_window=o.batch_window,
            healthy=self.supervisor.healthy,
        )
        self._poll_task = self.supervisor.spawn(self.poller.run(), "the stream poller")

    def _start_autosave(self, writes_before_clients: int) -> None:
        o = self.options
        if self.embedded and o.keep_tables and o.autosave > 0:
            self._autosave_task = self.supervisor.spawn(
                self._autosave(o.autosave, writes_before_clients), "the autosave"
            )
            self._cleanups.append(self._stop_autosave)

    async def _rerun_unfinished(self) -> None:
        """Run again what the last run left unfinished when it broke (kept in ./db)."""
        kept = await asyncio.to_thread(unfinished.load, self.options.db)
        if not kept:
            return
        log.warning(
            "running again %d invocations the last run left unfinished when it broke (%s): "
            "their handlers may see these events a second time",
            len(kept),
            unfinished.summary(kept),
        )
        for invocation in kept:
            if not self.runtime.has_function(invocation.function):
                log.warning(
                    "not run again: %s request %s: no function %s any more (its event: %s)",
                    invocation.function,
                    invocation.request_id,
                    invocation.function,
                    invocation.event,
                )
                continue
            self.runtime.invoke_async(invocation.function, json.loads(invocation.event))
        self._reran = kept

    async def _publish(self, event: dict[str, Any]) -> Any:
        """The publisher on a batch of stream records; the archive holds its events
        before the poller checkpoints past them, so a crash can't skip archiving one."""
        result = await self.runtime.invoke(PUBLISHER, event)
        await self.archive.flush()
        return result

    def _route_functions(self) -> list[FunctionSpec]:
        return [
            FunctionSpec(
                name=_route_function(route),
                handler=handler,
                pattern=None,
                retry_attempts=0,
                timeout=29,
            )
            for route, handler in self.options.ws_routes.items()
        ]

    def _bridge_functions(self) -> list[FunctionSpec]:
        """The four bridge functions, configured as the bridge stack configures them.

        Their variables are the stack's: the ``[bridge]`` settings with the table name,
        and the *bridge* port's ``@connections`` endpoint (a user's route functions keep
        the user's API's, from the shared environment). Forward is retried as Lambda
        retries an async invocation, like every subscriber.
        """
        o = self.options
        if not o.bridge:
            return []
        environment = {
            **self.subscriptions.bridge.environment(bridge_table_name(o.stage)),
            MANAGEMENT_ENDPOINT_VARIABLE: str(self.bridge_management_url),
        }
        specs = []
        for name, handler in BRIDGE_HANDLERS.items():
            forward = name == BRIDGE_FORWARD
            specs.append(
                FunctionSpec(
                    name=name,
                    handler=handler,
                    pattern=None,  # invoked by the two bridge rules, see _bridge_rules
                    retry_attempts=FORWARD_RETRY_ATTEMPTS if forward else 0,
                    max_event_age=FORWARD_MAX_EVENT_AGE_SECONDS,
                    timeout=BRIDGE_FORWARD_TIMEOUT if forward else BRIDGE_ROUTE_TIMEOUT,
                    environment=environment,
                )
            )
        return specs

    def _bridge_rules(self) -> list[Rule]:
        """The live and replay rules on the bus, both to bridge-forward, named and with
        ARNs as in AWS: StartReplay's FilterArns can name the replay rule."""
        from bridge.offline.bus import Rule

        o = self.options
        if not o.bridge:
            return []
        return [
            Rule(
                name=(name := bridge_rule_name(o.stage, kind)),
                pattern=bridge_rule_pattern(kind),
                target=BRIDGE_FORWARD,
                arn=rule_arn(o.region, LOCAL_ACCOUNT, name, BUS_NAME),
                target_arn=function_arn(o.region, LOCAL_ACCOUNT, o.stage, BRIDGE_FORWARD),
                description=_BRIDGE_RULE_DESCRIPTIONS[kind],
            )
            for kind in BRIDGE_RULE_KINDS
        ]

    def _integration(self, function_for: Callable[[str], str]) -> Invoke:
        """A gateway's ``invoke``: run the route's function, raise when it failed (the
        gateway answers the client as API Gateway does then)."""

        async def invoke(route: str, event: dict[str, Any]) -> Any:
            result = await self.runtime.invoke(function_for(route), event)
            if not result.ok:
                error = result.error or {}
                raise RuntimeError(f"{error.get('errorType')}: {error.get('errorMessage')}")
            return result.payload

        return invoke

    async def _start_gateway(self) -> None:
        """The user's own API (``--ws-route``), signed only with ``--iam-auth``."""
        from bridge.offline.gateway import Gateway

        o = self.options
        self.gateway = Gateway(
            stage=o.stage,
            invoke=self._integration(_route_function),
            routes=set(o.ws_routes),
            host=o.host,
            port=o.ws_port,
            idle_timeout=o.idle_timeout,
            max_connection_age=o.max_connection_age,
            iam_auth=o.iam_auth,
            keys=self._signing_keys,
            region=o.region,
            supervise=self.supervisor.watch,
        )
        await self.gateway.start()
        self._cleanups.append(self.gateway.stop)

    async def _start_bridge_gateway(self) -> None:
        """The bridge API on its own port: SigV4 on ``$connect`` unless --no-iam-auth,
        the gateway's timeouts (idle, maximum age) as for the user's API."""
        from bridge.offline.gateway import Gateway

        o = self.options
        if not o.bridge:
            return
        self.bridge_gateway = Gateway(
            stage=o.stage,
            invoke=self._integration(_bridge_function),
            routes=BRIDGE_ROUTES,
            host=o.host,
            port=o.bridge_port,
            idle_timeout=o.idle_timeout,
            max_connection_age=o.max_connection_age,
            iam_auth=o.bridge_iam_auth,
            keys=self._signing_keys,
            region=o.region,
            name="bridge API",
            port_option="--bridge-port",
            api_id=BRIDGE_API_ID,
            supervise=self.supervisor.watch,
        )
        await self.bridge_gateway.start()
        self._cleanups.append(self.bridge_gateway.stop)

    async def _watch_embedded(self) -> None:
        """Notice the embedded DynamoDB dying (killed, out of memory) while all is quiet;
        under load, the first failure it causes finds out first (``healthy``)."""
        while self.supervisor.healthy():
            await asyncio.sleep(0.1)

    def _embedded_gone(self) -> str | None:
        """The supervisor's check of the embedded DynamoDB: why it is gone, if it is."""
        if self.embedded is None or self._embedded_stopping:
            return None
        status = self.embedded.exit_status()
        if status is None:
            return None
        how = f"killed by signal {-status}" if status < 0 else f"exit code {status}"
        return (
            f"the embedded DynamoDB exited unexpectedly ({how}); its tables "
            f"are as last saved in {self.options.db}, restored at the next "
            "start"
        )

    async def _stop_embedded(self) -> None:
        assert self.embedded is not None
        self._embedded_stopping = True  # its exit from here on is ours
        await asyncio.to_thread(self.embedded.stop)

    def _halt(self) -> None:
        """The run broke (the supervisor calls this at once): stop invoking, take no more
        events, stop polling and folding. stop() then ends the rest, without draining."""
        log.debug("halting: %s", self.broken_reason)
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.halt()
        bus = getattr(self, "bus", None)
        if bus is not None:
            bus.halt(self.broken_reason)
        poller = getattr(self, "poller", None)
        if poller is not None:
            poller.stop()
        self._autosave_stop.set()

    async def stop(self) -> dict[str, int]:
        """Drain the pipeline, then stop every part; returns what the snapshot saved.

        Each part is stopped even when an earlier step failed (the archive is always
        flushed); a failure is then reported as one error after everything stopped.
        """
        saved: dict[str, int] = {}
        failure: BaseException | None = None
        kept = ""
        try:
            await self._stop_autosave()  # before draining: no save may follow the final one
            # Broken: nothing to drain from or save, a part is gone.
            if self._poll_task is not None and not self.broken.is_set():
                await self._drain()
                if self.embedded and self.options.keep_tables and not self.broken.is_set():
                    await self.archive.close()  # flushed before the snapshot is taken
                    log.info("saving the tables into %s …", self.options.db)
                    saved = await self._save_tables()
        except Exception as error:  # noqa: BLE001 - reported after the rest has stopped
            if not self.broken.is_set():  # else a consequence of the break, reported as it
                failure = error
                log.error("stopping: %s", error)
        finally:
            if self._poll_task is not None:  # still running if draining failed early
                self.poller.stop()
                await asyncio.gather(self._poll_task, return_exceptions=True)
                self._poll_task = None
            await self._stop_started()
            kept = await self._keep_unfinished()
            self._release_lock()
        if self.broken.is_set():
            raise BridgeError(self.broken_reason + kept)
        if failure is not None:
            raise BridgeError(f"bridge offline stopped with an error: {failure}") from None
        return saved

    async def _drain(self) -> None:
        """Refuse new work, then publish and handle everything already accepted."""
        await self.gateway.stop()
        if self.embedded:
            await asyncio.to_thread(self.embedded.close_writes)
        self.poller.stop()
        if self._poll_task is not None:
            await asyncio.gather(self._poll_task, return_exceptions=True)  # (its death: broken)
        # A handler may append to the log while it runs (a saga); its items are in the
        # stream only after the handler ends. Repeat until a pass publishes nothing.
        while not self.broken.is_set():
            published = self.poller.published
            await self.poller.catch_up()
            await self.runtime.drain()
            if self.poller.published == published:
                break
        if self.broken.is_set():
            return  # a part died while draining: stop() ends the rest as after any break
        await self.events.stop()  # no more PutEvents from outside …
        await self.runtime.drain()  # … and what the last handlers published has run
        if self.bridge_gateway is not None:
            # Last: the bridge's clients got every event of the drain live, and forward
            # never found its @connections endpoint gone (a retry for every event). Its
            # sockets close with 1001 (clients resume later); $disconnect runs, once.
            await self.bridge_gateway.stop()
            await self.runtime.drain()
        log.info("pipeline drained: %d stream records published in all", self.poller.published)

    async def _autosave(self, interval: float, saved: int) -> None:
        """Fold the journal into the snapshot whenever the endpoint has been quiet for
        ``interval`` seconds, everything written published and handled.

        Every acknowledged write is durable in the journal already; folding in a lull
        only keeps the next start quick (the endpoint also folds by itself, every
        10,000 writes). ``saved`` counts the writes the snapshot already holds.
        """
        assert self.embedded is not None
        interval = max(interval, 0.1)
        last = saved
        while not await self._autosave_stopping(interval):
            try:
                writes, writing = await asyncio.to_thread(self.embedded.write_counts)
                quiet = writes == last and not writing
                last = writes
                if writes == saved or not quiet or not await self._settled(time.monotonic()):
                    continue
                if self._autosave_stop.is_set():
                    return  # the clean stop folds after draining
                counts = await asyncio.to_thread(self.embedded.fold)
            except (OSError, ValueError, http.client.HTTPException) as error:
                # The endpoint did not answer, or not in JSON: the journal keeps it all
                # anyway. (Anything else is a fault of ours: the task dies, supervised.)
                if self.supervisor.healthy():
                    log.warning("folding the tables' journal in a quiet moment failed: %s", error)
                continue
            saved = writes
            log.info("tables saved: %d items in %d tables", sum(counts.values()), len(counts))

    async def _autosave_stopping(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._autosave_stop.wait(), seconds)
        return self._autosave_stop.is_set()

    async def _settled(self, since: float, timeout: float = 5.0) -> bool:
        """Whether the stream was read to its end after ``since`` with no function busy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._autosave_stop.is_set():
            if self.poller.caught_up_at > since and not self.runtime.backlog():
                return True
            await asyncio.sleep(0.05)
        return False

    async def _stop_autosave(self) -> None:
        """End the autosave (a fold under way is finished)."""
        self._autosave_stop.set()
        if self._autosave_task is not None:
            await asyncio.gather(self._autosave_task, return_exceptions=True)
            self._autosave_task = None

    async def _save_tables(self) -> dict[str, int]:
        assert self.embedded is not None
        return await asyncio.to_thread(self.embedded.fold)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _stop_started(self) -> None:
        """Undo every start step, newest first; one failing step doesn't skip the rest.
        After a break, a step's failure is a consequence of it: logged for -v only."""
        for cleanup in reversed(self._cleanups):
            log.debug("stopping: %s", getattr(cleanup, "__qualname__", cleanup))
            try:
                result = cleanup()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as error:  # noqa: BLE001 - keep stopping the other parts
                log.log(
                    logging.DEBUG if self.broken.is_set() else logging.ERROR,
                    "stopping %s: %s",
                    getattr(cleanup, "__qualname__", cleanup),
                    error,
                )
        self._cleanups.clear()

    async def _keep_unfinished(self) -> str:
        """Keep in ./db what a break left unfinished (or clear what a clean stop finished);
        the words to add to the break's line."""
        runtime = getattr(self, "runtime", None)
        left: list[Any] = list(runtime.unfinished) if runtime is not None else []
        if not left and not self._reran:
            return ""
        db = self.options.db
        try:
            await asyncio.to_thread(unfinished.replace, db, left)
        except (OSError, sqlite3.Error) as error:
            log.error(
                "could not keep the unfinished invocations in %s (%s); they were: %s",
                db,
                error,
                "; ".join(f"{i.function} {i.request_id} {i.event}" for i in left),
            )
            return f"; {len(left)} invocations in flight are listed above" if left else ""
        if not left:
            return ""
        return (
            f"; {len(left)} invocations in flight ({unfinished.summary(left)}) are kept in "
            f"{db} and run again at the next start"
        )


def create_bridge_table(client: Any, name: str) -> bool:
    """The bridge table (pk S, sk S, TTL on ``ttl``) if missing; True if it was created.

    TTL is switched on even for a table that exists: a table restored from the saved
    snapshot comes back without it (the snapshot keeps keys and items, not TTL).
    """
    from botocore.exceptions import ClientError

    created = False
    if name not in client.get_paginator("list_tables").paginate().build_full_result()["TableNames"]:
        try:
            client.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            created = True
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    try:
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": BRIDGE_TTL_ATTRIBUTE},
            )
    except ClientError as error:  # an endpoint without TTL: the functions filter on read
        log.warning("%s: TTL on %r could not be switched on: %s", name, BRIDGE_TTL_ATTRIBUTE, error)
    return created


def _bridge_function(route: str) -> str:
    """The bridge function behind a route of the bridge API."""
    return BRIDGE_ROUTE_FUNCTIONS.get(route, BRIDGE_MESSAGE)


def _route_function(route: str) -> str:
    """``$connect`` → ``ws-connect``: a function name Lambda would accept."""
    return "ws-" + route.lstrip("$")
