"""The I/O around `bridge offline` and `bridge clean`: signals, printing, files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from bridge.core.errors import BridgeError, ValidationError
from bridge.core.names import ARCHIVE_NAME, BUS_NAME, bridge_table_name
from bridge.offline.cloud import SIGNING_CREDENTIALS, LocalCloud, OfflineOptions
from bridge.offline.state import DatabaseLock, database_files


def run_offline(
    options: dict[str, Any], routes: dict[str, str], *, as_json: bool, verbosity: int
) -> None:
    """``options`` are OfflineOptions' fields, but ``config`` (the definition file) and
    ``iam_keys`` as given (``KEY:SECRET[:PRINCIPAL_ARN]`` texts)."""
    from bridge.offline.gateway import parse_signing_key
    from bridge.subscriptions import load

    configure_logging(verbosity)
    keys = tuple(parse_signing_key(text) for text in options.pop("iam_keys", ()))
    subscriptions = load(options.pop("config"))
    root = handler_root(subscriptions)
    check_routes(routes, root)
    cloud = LocalCloud(
        OfflineOptions(**options, iam_keys=keys, ws_routes=routes), subscriptions, root
    )
    asyncio.run(_serve(cloud, as_json))


def handler_root(subscriptions: Any, cwd: Path | None = None) -> Path:
    """Where the functions' modules are looked up, imported and watched for edits.

    A project's own ``dynamodb-logs.toml``: its folder. No file (the packaged definition
    is used): the current directory, where a new user's ``--ws-route app.ws.handler``
    lives — not the folder the package is installed in. The packaged handlers
    (``bridge.lambdas.*``) resolve from wherever the ``bridge`` package is, either way.
    """
    from bridge.subscriptions import PACKAGED_DEFAULT, project_root

    if Path(subscriptions.source).resolve() == PACKAGED_DEFAULT:
        return (cwd or Path.cwd()).resolve()
    return project_root(subscriptions)


def check_routes(routes: dict[str, str], root: Path) -> None:
    """Refuse, before anything starts, a --ws-route whose handler isn't there — the same
    check the subscriptions file's handlers get."""
    from bridge.core.subscriptions import FunctionSpec
    from bridge.subscriptions import handler_problem

    for route, handler in routes.items():
        module, dot, function = handler.rpartition(".")
        if not dot or not module or not function:
            raise ValidationError(f"--ws-route {route}={handler}: expected module.function")
        problem = handler_problem(FunctionSpec(name="route", handler=handler, pattern=None), root)
        if problem is not None:
            raise ValidationError(f"--ws-route {route}={handler}: {problem}")


def configure_logging(verbosity: int) -> None:
    """0: invocations and handler output (what a debugging session wants to see);
    -1 (--quiet): warnings only; 1 (--verbose): everything, requests included."""
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 0 else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if verbosity == 0:
        # Every logger of the local cloud descends from this one: each module's own
        # (``__name__``: bridge.offline.runtime's invocation lines, …) and the output
        # of each function (``bridge.offline.functions.{name}``, see the runtime).
        logging.getLogger("bridge.offline").setLevel(logging.INFO)
    if verbosity > 0:
        for noisy in ("botocore", "urllib3", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.INFO)


async def _serve(cloud: LocalCloud, as_json: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: the user does not want to wait
            _say("stopping now: writes since the last save are lost", err=True)
            os._exit(130)
        stop.set()

    # SIGHUP: the terminal was closed — stop as cleanly as on Ctrl-C; unless it is
    # ignored already (`nohup bridge offline &`): then keep running, as asked.
    signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    await cloud.start()
    try:
        _print_started(cloud, as_json)
        asked, broke = (asyncio.ensure_future(e.wait()) for e in (stop, cloud.broken))
        await asyncio.wait({asked, broke}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (asked, broke):
            waiter.cancel()
        if not as_json and not cloud.broken.is_set():
            _say(
                "stopping: publishing what the stream still holds (Ctrl-C again to quit at once) …",
                err=True,
            )
    finally:
        saved = await cloud.stop()
    summary = {
        "published": cloud.poller.published,
        "archived": cloud.archive.written,
        "saved_tables": saved,
    }
    if as_json:
        _say(json.dumps({"stopped": summary}))
    else:
        kept = f", {sum(saved.values())} items in {len(saved)} tables kept" if saved else ""
        _say(
            f"stopped: {summary['published']} stream records published, "
            f"{summary['archived']} events archived{kept}"
        )


def _say(text: str, err: bool = False) -> None:
    """Print, unless the terminal is gone (closed window): the stop goes on regardless."""
    with contextlib.suppress(OSError):
        click.echo(text, err=err)


def _print_started(cloud: LocalCloud, as_json: bool) -> None:
    o = cloud.options
    # Any key works locally; set one so the SDKs never go looking for a real account.
    access_key, secret = SIGNING_CREDENTIALS  # the key both APIs accept on $connect
    exports = {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret,
        **cloud.exported_variables(),
    }
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dynamodb": cloud.dynamodb_url,
                    "events": cloud.events_url,
                    "websocket": cloud.ws_url,
                    "bridge": cloud.bridge_url,  # null with --no-bridge
                    "bridge_management": cloud.bridge_management_url,
                    "bridge_iam_auth": o.bridge and o.bridge_iam_auth,
                    "db": str(o.db),
                    "restored": cloud.restored,
                    "exports": exports,
                }
            ),
            nl=True,
        )
        sys.stdout.flush()
        return
    kind = "embedded" if cloud.embedded else "external"
    restored = (
        f"; restored {sum(cloud.restored.values())} items in {len(cloud.restored)} tables"
        if cloud.restored
        else ""
    )
    functions = ", ".join(cloud.runtime.function_names())
    signing = f"key {access_key}/{secret}" + (
        f" or {_count(len(o.iam_keys), '--iam-key')}" if o.iam_keys else ""
    )
    click.echo(
        f"bridge offline (stage {o.stage}) is running — Ctrl-C stops it cleanly.\n"
        f"  DynamoDB     {cloud.dynamodb_url}  ({kind}{restored})\n"
        f"  EventBridge  {cloud.events_url}  (bus {BUS_NAME}, "
        f"{_count(len(cloud.bus.rules), 'rule')}, archive {ARCHIVE_NAME})\n"
        f"  Lambda       {cloud.events_url}  ({functions})\n"
        f"  WebSocket    {cloud.ws_url}  (management API {cloud.management_url}"
        + (f", $connect needs SigV4 with {signing}" if o.iam_auth else "")
        + ")\n"
        + _bridge_line(cloud, signing)
        + f"  archive      {o.db} (SQLite, table events)\n"
        "Point the AWS CLI and SDKs at it:"
    )
    for name, value in exports.items():
        click.echo(f"  export {name}={value}")
    sys.stdout.flush()


def _bridge_line(cloud: LocalCloud, signing: str) -> str:
    o = cloud.options
    if not o.bridge:
        return "  Bridge API   off (--no-bridge)\n"
    auth = (
        f"$connect needs SigV4 with {signing}"
        if o.bridge_iam_auth
        else "UNSIGNED connections taken (--no-iam-auth)"
    )
    return (
        f"  Bridge API   {cloud.bridge_url}  (management API {cloud.bridge_management_url}, "
        f"{auth}; table {bridge_table_name(o.stage)})\n"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _describe(db: Path) -> list[str]:
    """What the file holds, in words, for the confirmation."""
    lines = []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "dynamodb_tables" in tables:
            for (name,) in conn.execute("SELECT name FROM dynamodb_tables"):
                (items,) = conn.execute(
                    "SELECT COUNT(*) FROM dynamodb_items WHERE table_name=?", (name,)
                ).fetchone()
                lines.append(f"table {name} ({items} items)")
        if "events" in tables:
            (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
            lines.append(f"{events} archived events")
        if "checkpoints" in tables:
            (shards,) = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
            lines.append(f"stream checkpoints of {shards} shards")
    return lines


def clean_local_data(db: Path, yes: bool, target: Any = None) -> None:
    """Say what will go, ask (unless ``yes``), then remove it."""
    tables = _endpoint_tables(target) if target else []
    if not db.exists() and not tables:
        click.echo(
            f"nothing to clean: {db} does not exist"
            + (f" and {target.dynamodb_endpoint} has no {target.stage} tables" if target else "")
        )
        return
    lock = DatabaseLock(db).acquire()  # refused while a `bridge offline` uses the file
    try:
        _clean(db, yes, target, tables)
    finally:
        lock.release()


def _clean(db: Path, yes: bool, target: Any, tables: list[str]) -> None:
    if db.exists():
        try:
            contents = _describe(db)
        except sqlite3.Error as error:
            raise BridgeError(
                f"{db} is not a bridge database ({error}); remove it by hand"
            ) from None
        click.echo(f"{db} holds: " + ("; ".join(contents) if contents else "no data"))
    files = database_files(db)  # after reading: a WAL reader may have created -wal/-shm
    if tables:
        click.echo(f"{target.dynamodb_endpoint} holds: " + ", ".join(tables))
    if not yes:
        if not sys.stdin.isatty():
            raise BridgeError("refusing to delete without confirmation: pass --yes")
        click.confirm("remove all of it?", abort=True)
    for path in files:
        path.unlink()
    if files:
        click.echo(f"removed {', '.join(map(str, files))}")
    if tables:
        client = target.dynamodb().meta.client
        for name in tables:
            client.delete_table(TableName=name)
        click.echo(f"deleted tables {', '.join(tables)}")


def _endpoint_tables(target: Any) -> list[str]:
    """The stage's tables (log, core, bridge) that exist at the user's own local endpoint."""
    client = target.dynamodb().meta.client
    names = set(client.get_paginator("list_tables").paginate().build_full_result()["TableNames"])
    stage_tables = (target.log_table, target.core_table, bridge_table_name(target.stage))
    return [t for t in stage_tables if t in names]
