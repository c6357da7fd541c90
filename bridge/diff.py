"""`bridge diff`: what changed in a table between two local databases, item by item.

Each side is a directory holding a `bridge offline` database (``DIR/db``, as
``bridge offline --db DIR/db`` or ``bridge rebuild --into DIR`` leaves it), or the
database file itself. Both are read from their files (:mod:`bridge.offline.reader`),
so nothing has to run. Items are matched by primary key; an item present on both
sides is *changed* when any top-level attribute differs, and the change lists those
attributes with their values before and after. Numbers compare as numbers (``1`` and
``1.0`` are one value, as in DynamoDB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.core.dynamo_json import load_item
from bridge.core.errors import BridgeError
from bridge.core.log import from_dynamo
from bridge.core.names import DEFAULT_REGION, core_table_name, log_table_name
from bridge.offline.reader import StoredTable, read_table

DB_FILE = "db"  # the database a directory holds, as `bridge offline --db DIR/db` names it
_ABSENT = object()


def database_path(where: str | Path) -> Path:
    """``DIR`` → ``DIR/db``; a file is taken as the database itself."""
    path = Path(where)
    if path.is_dir():
        return path / DB_FILE
    if path.is_file():
        return path
    raise BridgeError(f"{path}: no such directory")


def table_name(table: str, stage: str) -> str:
    """``core`` and ``log`` name the stage's tables; anything else is a full name."""
    if table == "core":
        return core_table_name(stage)
    if table == "log":
        return log_table_name(stage)
    return table


@dataclass(frozen=True)
class Change:
    """One item present on both sides whose attributes differ."""

    key: dict[str, Any]
    before: dict[str, Any]  # the differing attributes only; missing: not on that side
    after: dict[str, Any]

    @property
    def attributes(self) -> list[str]:
        return sorted({*self.before, *self.after})


@dataclass
class TableDiff:
    table: str
    a: str
    b: str
    key_names: list[str]
    added: list[dict[str, Any]] = field(default_factory=list)  # whole items of B
    removed: list[dict[str, Any]] = field(default_factory=list)  # whole items of A
    changed: list[Change] = field(default_factory=list)
    unchanged: int = 0

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self.key_names}

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
        }

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (numbers as int/float, binary as base64 text)."""
        return {
            "table": self.table,
            "a": self.a,
            "b": self.b,
            "added": [{"key": self.key_of(i), "item": i} for i in map(from_dynamo, self.added)],
            "removed": [{"key": self.key_of(i), "item": i} for i in map(from_dynamo, self.removed)],
            "changed": [
                {
                    "key": from_dynamo(c.key),
                    "changes": {
                        name: {
                            side: from_dynamo(values[name])
                            for side, values in (("before", c.before), ("after", c.after))
                            if name in values
                        }
                        for name in c.attributes
                    },
                }
                for c in self.changed
            ],
            "counts": self.counts(),
        }

    def lines(self) -> list[str]:
        """For a person: one line per item (``+`` added, ``-`` removed, ``~`` changed),
        then the counts."""
        out = [f"{self.table}: {self.a} → {self.b}"]
        for item in self.added:
            out.append(f"+ {self._label(item)}  {_show(self._rest(item))}")
        for item in self.removed:
            out.append(f"- {self._label(item)}  {_show(self._rest(item))}")
        for change in self.changed:
            parts = [
                f"{name}: {_show(change.before.get(name, _ABSENT))} → "
                f"{_show(change.after.get(name, _ABSENT))}"
                for name in change.attributes
            ]
            out.append(f"~ {self._label(change.key)}  {'; '.join(parts)}")
        counts = self.counts()
        out.append(", ".join(f"{n} {what}" for what, n in counts.items()))
        return out

    def _label(self, item: dict[str, Any]) -> str:
        values = [str(from_dynamo(item[name])) for name in self.key_names]
        if len(values) == 2 and values[0] == values[1]:
            return values[0]  # pk = sk (the users read model): say it once
        return " / ".join(values)

    def _rest(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in self.key_names}


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    return json.dumps(from_dynamo(value), ensure_ascii=False, sort_keys=True, default=str)


def compare(a: StoredTable, b: StoredTable, a_label: str, b_label: str) -> TableDiff:
    """Item by item, in key order. Values compared as loaded (``Decimal``, sets, bytes)."""
    diff = TableDiff(a.name, a_label, b_label, b.key_names)
    for key in sorted(a.items.keys() | b.items.keys()):
        old, new = a.items.get(key), b.items.get(key)
        if old is None:
            diff.added.append(load_item(new or {}))
        elif new is None:
            diff.removed.append(load_item(old))
        else:
            before, after = load_item(old), load_item(new)
            names = sorted(before.keys() | after.keys())
            differing = [n for n in names if before.get(n, _ABSENT) != after.get(n, _ABSENT)]
            if not differing:
                diff.unchanged += 1
                continue
            diff.changed.append(
                Change(
                    key={name: after[name] for name in b.key_names},
                    before={n: before[n] for n in differing if n in before},
                    after={n: after[n] for n in differing if n in after},
                )
            )
    return diff


def diff_databases(
    dir_a: str | Path,
    dir_b: str | Path,
    table: str = "core",
    stage: str = "local",
    region: str = DEFAULT_REGION,
) -> TableDiff:
    """The table's differences from ``dir_a``'s database to ``dir_b``'s."""
    name = table_name(table, stage)
    db_a, db_b = database_path(dir_a), database_path(dir_b)
    a, b = read_table(db_a, name, region), read_table(db_b, name, region)
    if a.key_names != b.key_names:
        raise BridgeError(
            f"{name} has key {a.key_names} in {db_a} but {b.key_names} in {db_b}: "
            "not one table to compare"
        )
    return compare(a, b, str(dir_a), str(dir_b))
