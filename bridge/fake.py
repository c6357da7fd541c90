"""The seed's fake users: signup, addPhoneNumber, verifyPhoneNumber, addLocation.

The payloads are the seed generator's own (``create-fake-data.js``), so handlers
written for the seed run on them unchanged: ``{id, name, email}``,
``{id, phoneNumber}`` twice, then ``{id, long, lat}`` with numbers (floats here;
the store writes them as DynamoDB numbers, ``Decimal``).

Reproducible: the same ``seed`` gives the same users, ids and values.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from faker import Faker

USER_EVENT_TYPES = ("signup", "addPhoneNumber", "verifyPhoneNumber", "addLocation")


@dataclass(frozen=True)
class FakeEvent:
    log: str
    id: str
    version: int
    type: str
    payload: dict[str, Any]


def fake_users(count: int, seed: int | None = None) -> Iterator[list[FakeEvent]]:
    """Yield, per user, the four events of versions 1–4 in order."""
    rng = random.Random(seed)
    faker = Faker()
    faker.seed_instance(rng.getrandbits(64))
    for _ in range(count):
        id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        phone = faker.phone_number()
        payloads: list[dict[str, Any]] = [
            {"id": id, "name": faker.name(), "email": faker.email()},
            {"id": id, "phoneNumber": phone},
            {"id": id, "phoneNumber": phone},
            # Faker's coordinates are Decimals of a few places: as floats they keep
            # those digits exactly (repr is the shortest form, which to_dynamo keeps).
            {"id": id, "long": float(faker.longitude()), "lat": float(faker.latitude())},
        ]
        yield [
            FakeEvent("users", id, version, type, payload)
            for version, (type, payload) in enumerate(
                zip(USER_EVENT_TYPES, payloads, strict=True), start=1
            )
        ]
