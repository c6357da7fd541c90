"""The users projection Lambda against a real moto server.

Generated users are written to the log with ``LogStore``; their events, built
exactly as the publisher builds them, are delivered shuffled and duplicated, as
EventBridge may; the read model in the core table must end equal to a fold of
the log for every user.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from lambda_events import RecordingHandler, aws_environment, http_server, session, unique

from bridge.core.events import entry_for, envelope
from bridge.core.log import LogItem, from_dynamo
from bridge.fake import fake_users
from bridge.lambdas import users_projection
from bridge.lambdas.users_projection import MissingVersionsError
from bridge.store import LogStore, create_tables


@pytest.fixture
def tables(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fresh log and core tables; the function's environment names them."""
    aws_environment(monkeypatch, endpoint)
    stage = unique("proj")
    logs, core = f"{stage}-dynamodb-logs", f"{stage}-core"
    dynamodb = session().resource("dynamodb", endpoint_url=endpoint)
    create_tables(dynamodb, logs, core)
    monkeypatch.setenv("DYNAMODB_LOGS_TABLE", logs)
    monkeypatch.setenv("DYNAMODB_CORE_TABLE", core)
    return {"store": LogStore(dynamodb.Table(logs)), "core": dynamodb.Table(core)}


def bus_event(item: LogItem) -> dict[str, Any]:
    """What the subscriber receives for a log item: the publisher's entry, as delivered."""
    return envelope(entry_for(item))


def write_users(store: LogStore, count: int, seed: int) -> list[str]:
    ids = []
    for events in fake_users(count, seed):
        for e in events:
            store.append(e.log, e.id, e.type, e.payload, expected_version=e.version - 1)
        ids.append(events[0].id)
    return ids


def expected_model(store: LogStore, id: str) -> dict[str, Any]:
    """The read model folded straight from the log (independently of the handler)."""
    key = f"users#{id}"
    model: dict[str, Any] = {"pk": key, "sk": key, "type": "user", "id": id}
    for item in store.read("users", id):
        p = item.payload
        if item.type == "signup":
            model["name"], model["email"] = p["name"], p["email"]
        elif item.type == "addPhoneNumber":
            model["phoneNumber"] = p["phoneNumber"]
        elif item.type == "verifyPhoneNumber":
            model["verifiedPhoneNumber"] = True
        elif item.type == "addLocation":
            model["location"] = {"long": p["long"], "lat": p["lat"]}
        model["version"] = item.version
    return model


def read_models(core: Any) -> dict[str, dict[str, Any]]:
    items = core.scan(ConsistentRead=True)["Items"]
    return {item["id"]: from_dynamo(item) for item in items}


def test_shuffled_duplicated_events_build_every_read_model_exactly(
    tables: dict[str, Any],
) -> None:
    store = tables["store"]
    ids = write_users(store, 25, seed=3)
    events = [bus_event(item) for id in ids for item in store.read("users", id)]
    rng = random.Random(8)
    delivered = events + rng.sample(events, 40)  # EventBridge delivers at least once
    rng.shuffle(delivered)

    results = [users_projection.handler(event, None) for event in delivered]

    models = read_models(tables["core"])
    assert set(models) == set(ids)
    for id in ids:
        assert models[id] == expected_model(store, id)
    statuses = [r["status"] for r in results]
    assert statuses.count("duplicate") >= 40  # every repeat, plus versions already folded in
    # Versions that arrived ahead were filled from the log, in order, before their own.
    gap_fills = [
        r["applied"] for r in results if r["status"] == "applied" and len(r["applied"]) > 1
    ]
    assert gap_fills and all(a == list(range(a[0], a[-1] + 1)) for a in gap_fills)
    assert sorted(v for r in results if r["status"] == "applied" for v in r["applied"]) == sorted(
        e["detail"]["key"]["sk"] for e in events
    )  # every version applied exactly once


def test_a_partial_event_takes_its_payload_from_the_log(tables: dict[str, Any]) -> None:
    store = tables["store"]
    payload = {"id": "p1", "name": "N" * 11_000, "email": "p1@example.com"}
    store.append("users", "p1", "signup", payload)
    event = bus_event(next(store.read("users", "p1")))
    assert event["detail"]["partial"] is True and event["detail"]["payload"] == {"id": "p1"}

    assert users_projection.handler(event, None)["status"] == "applied"

    model = read_models(tables["core"])["p1"]
    assert model["name"] == payload["name"] and model["email"] == payload["email"]
    assert model["version"] == 1


def test_a_gap_the_log_cannot_fill_raises_and_writes_nothing(tables: dict[str, Any]) -> None:
    store = tables["store"]
    store.append("users", "g1", "signup", {"id": "g1", "name": "a", "email": "a@b.c"})
    # Version 3 exists without version 2: written around the store (the AWS CLI, a
    # console), since the store itself refuses to leave a gap.
    gap = LogItem("users", "g1", 3, "addLocation", {"id": "g1", "long": 1.5, "lat": 2.5})
    store.table.put_item(Item=gap.to_item())
    version_3 = bus_event(list(store.read("users", "g1"))[-1])

    with pytest.raises(MissingVersionsError, match=r"users#g1#stream.*lacks version\(s\) \[2\]"):
        users_projection.handler(version_3, None)
    assert read_models(tables["core"]) == {}

    # Once version 1 is folded in, the gap is still [2]: the model stays at version 1.
    users_projection.handler(bus_event(next(store.read("users", "g1"))), None)
    with pytest.raises(MissingVersionsError):
        users_projection.handler(version_3, None)
    assert read_models(tables["core"])["g1"]["version"] == 1


def test_an_event_for_a_user_missing_from_the_log_raises(tables: dict[str, Any]) -> None:
    ghost = LogItem("users", "ghost", 2, "addPhoneNumber", {"id": "ghost", "phoneNumber": "1"})
    with pytest.raises(MissingVersionsError, match=r"lacks version\(s\) \[1\]"):
        users_projection.handler(bus_event(ghost), None)


def test_concurrent_invocations_for_the_same_users_end_consistent(
    tables: dict[str, Any],
) -> None:
    store = tables["store"]
    ids = write_users(store, 4, seed=21)
    events = [bus_event(item) for id in ids for item in store.read("users", id)]
    delivered = events * 3
    random.Random(2).shuffle(delivered)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda e: users_projection.handler(e, None), delivered))

    models = read_models(tables["core"])
    for id in ids:
        assert models[id] == expected_model(store, id)
    applied = sorted(v for r in results if r["status"] == "applied" for v in r["applied"])
    assert applied == sorted(e["detail"]["key"]["sk"] for e in events)


class HoldingProxy(RecordingHandler):
    """Forwards every request to moto; holds the reply to the first GetItem until released.

    This makes a real race happen on cue: the held invocation has read the model
    before another one writes it, so its conditional write must fail.
    """

    def respond(self, path: str, headers: dict[str, str], body: bytes):  # type: ignore[override]
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)  # type: ignore[attr-defined]
        forward = {k: v for k, v in headers.items() if k not in ("host", "connection")}
        upstream.request("POST", path, body=body, headers=forward)
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        if headers.get("x-amz-target", "").endswith(".GetItem"):
            with self.server.lock:  # type: ignore[attr-defined]
                hold = not self.server.held.is_set()  # type: ignore[attr-defined]
                self.server.held.set()  # type: ignore[attr-defined]
            if hold:
                assert self.server.release.wait(10)  # type: ignore[attr-defined]
        keep = ("content-type", "x-amzn-requestid", "x-amz-crc32")
        return reply.status, {k: v for k, v in reply.getheaders() if k.lower() in keep}, data


def test_a_concurrent_writer_makes_the_handler_re_read_and_retry(
    endpoint: str,
    tables: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = tables["store"]
    [id] = write_users(store, 1, seed=4)
    first, second = (bus_event(item) for item in list(store.read("users", id))[:2])
    upstream = endpoint.removeprefix("http://")
    held, release = threading.Event(), threading.Event()
    with http_server(HoldingProxy, upstream=upstream, held=held, release=release) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        with ThreadPoolExecutor(max_workers=1) as pool, caplog.at_level(logging.INFO):
            # Version 2 reads an empty model, and waits there ...
            slow = pool.submit(users_projection.handler, second, None)
            assert held.wait(10)
            # ... while version 1 is applied by another invocation.
            assert users_projection.handler(first, None)["status"] == "applied"
            release.set()
            result = slow.result(timeout=30)

    # Its write conditional on "no model yet" failed; it re-read version 1 and applied
    # only its own version on top, instead of folding version 1 in a second time.
    assert result == {"status": "applied", "id": id, "version": 2, "applied": [2]}
    assert sum("changed meanwhile" in r.getMessage() for r in caplog.records) == 1
    targets = [h.get("x-amz-target", "") for _, h, _ in proxy.requests]
    assert sum(t.endswith(".PutItem") for t in targets) == 3
    model = read_models(tables["core"])[id]
    assert model["version"] == 2 and model["phoneNumber"]
    assert "verifiedPhoneNumber" not in model  # not verified yet


def test_events_of_other_logs_are_ignored(tables: dict[str, Any]) -> None:
    order = LogItem("orders", "o1", 1, "placed", {"id": "o1"})
    assert users_projection.handler(bus_event(order), None) == {"status": "ignored"}
    assert read_models(tables["core"]) == {}


def test_an_event_without_its_field_changes_nothing_and_blocks_nothing(
    tables: dict[str, Any],
) -> None:
    store = tables["store"]
    store.append("users", "p1", "signup", {"id": "p1", "name": "a", "email": "a@b.c"})
    store.append("users", "p1", "addPhoneNumber", {"id": "p1"})  # no phoneNumber
    store.append("users", "p1", "addLocation", {"id": "p1", "long": -0.1278, "lat": 51.5074})
    for item in store.read("users", "p1"):
        users_projection.handler(bus_event(item), None)
    model = read_models(tables["core"])["p1"]
    assert model["version"] == 3
    assert model["location"] == {"long": -0.1278, "lat": 51.5074}
    assert "phoneNumber" not in model


def _seed_handler() -> Any:
    try:  # pytest puts tests/ on the path; a run from the project root has tests.*
        from handlers import seed_users
    except ImportError:  # pragma: no cover
        from tests.handlers import seed_users
    return seed_users


def test_the_seed_handlers_table_and_ours_are_one_read_model(tables: dict[str, Any]) -> None:
    """A user moving from the seed keeps their core table: on the same log, a handler
    written as the seed's and ours build the same items, and each picks up where the
    other stopped (same key, same version, same conditional writes)."""
    seed = _seed_handler()
    store = tables["store"]
    ids = write_users(store, 6, seed=9)
    for n, id in enumerate(ids):
        events = [bus_event(item) for item in store.read("users", id)]
        first, then = (seed.handler, users_projection.handler)
        if n % 2:
            first, then = then, first  # half begin with ours, the others with the seed's
        if n >= 4:
            then = first  # and two are built by one handler alone
        for event in events[:2]:
            first(event, None)
        for event in events[2:]:
            then(event, None)

    models = read_models(tables["core"])
    assert set(models) == set(ids)
    for id in ids:
        assert models[id] == expected_model(store, id)
    # The raw items, numbers included: location as DynamoDB numbers on both sides.
    raw = {item["id"]: item for item in tables["core"].scan(ConsistentRead=True)["Items"]}
    locations = [raw[id]["location"] for id in ids]
    assert all(isinstance(v, Decimal) for where in locations for v in where.values())
    # Our handler, given an event the seed's applied (user 4 is the seed's alone), sees
    # a duplicate.
    last = bus_event(list(store.read("users", ids[4]))[-1])
    assert users_projection.handler(last, None)["status"] == "duplicate"
