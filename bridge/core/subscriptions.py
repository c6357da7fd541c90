"""The subscriptions definition: which handler runs for which events, and how it retries.

One definition (``dynamodb-logs.toml``) is read by both the CDK stack and ``bridge
offline``, so a subscriber behaves the same in AWS and on a laptop. This module is
pure: it turns TOML text into :class:`Subscriptions` or fails with one line that says
``FILE:LINE: key.path: reason``; finding handler modules on disk is
:mod:`bridge.subscriptions`' job.

The file::

    [defaults]                      # optional, applies to every function
    timeout = 30

    [functions.users]
    handler = "bridge.lambdas.users_projection.handler"
    pattern = { source = ["dynamodb-log"], detail = { log = ["users"] } }
    on_failure = "failures"

    [functions.users.environment]
    GREETING = "hello"

Keys of a function: ``handler`` (required, ``module.function``), ``pattern`` (an
EventBridge pattern as a table or as JSON text; absent = not subscribed to the bus),
``retry_attempts`` (0..2), ``retry_delay_ms`` (offline only), ``max_event_age``
(60..21600 s), ``timeout`` (1..900 s), ``memory`` (128..10240 MB), ``on_failure``
(another function's name), ``environment`` (string values) and ``permissions``
(what the function may touch in AWS, see :data:`PERMISSIONS`). ``[defaults]`` takes
the same keys except ``handler``, ``pattern`` and ``on_failure``, which only make
sense per function; a function's ``environment`` is merged over the defaults' one.

The optional ``[bridge]`` table holds the settings of the bridge (the WebSocket API
that streams bus events to clients), read by the bridge stack and by ``bridge
offline`` alike; see :class:`BridgeSettings`. Without it the defaults hold.

Why some environment names are refused: ``AWS_*``, names starting with ``_``,
``TZ``, ``LAMBDA_TASK_ROOT`` and ``LAMBDA_RUNTIME_DIR`` are reserved by the Lambda
runtime (AWS refuses the deployment), and the project's own three variables
(:data:`PROJECT_VARIABLES`) are derived from the stage: overriding them would point a
handler at a table its IAM policy does not cover and make offline and AWS disagree.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.core.errors import ValidationError
from bridge.core.names import BRIDGE_PREFIX
from bridge.core.patterns import PatternError, validate_pattern

__all__ = [
    "BRIDGE_FORWARD_TIMEOUT",
    "BRIDGE_ROUTE_TIMEOUT",
    "BRIDGE_VARIABLES",
    "DEFAULT_PERMISSIONS",
    "BridgeSettings",
    "PERMISSIONS",
    "PROJECT_VARIABLES",
    "RESERVED_NAMES",
    "FunctionSpec",
    "Subscriptions",
    "SubscriptionsError",
    "error_at",
    "parse",
]

#: The variables every function gets from its stage (AWS and offline alike).
PROJECT_VARIABLES = ("DYNAMODB_LOGS_TABLE", "DYNAMODB_CORE_TABLE", "EVENT_BUS_NAME")

#: What a function may be granted. The stack turns each into exact IAM actions on
#: exactly one resource, so a subscriber gets only what it declares.
PERMISSIONS = {
    "log:read": "read the log table (GetItem, Query, BatchGetItem)",
    "log:write": "append to the log table (PutItem)",
    "core:read": "read the core table (GetItem, Query, BatchGetItem)",
    "core:write": "write the core table (PutItem, UpdateItem, DeleteItem, BatchWriteItem)",
    "bus:put": "put events on the bus (PutEvents)",
}
#: A projection's needs: read the log (for partial events) and keep a read model in core.
DEFAULT_PERMISSIONS: tuple[str, ...] = ("log:read", "core:read", "core:write")

#: Function names the stack uses for its own infrastructure.
RESERVED_NAMES = frozenset({"publisher"})
#: So is every name starting with this: the bridge stack's functions and rules are
#: ``dynamodb-logs-{stage}-bridge-…``, and a subscriber of that name would collide.
RESERVED_PREFIX = BRIDGE_PREFIX

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Lambda refuses these in a function's configuration (its documented reserved list);
# other AWS_* names (AWS_XRAY_CONTEXT_MISSING, AWS_LAMBDA_EXEC_WRAPPER …) and TZ are fine.
_LAMBDA_RESERVED_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
# Lambda: 4 KB for all of a function's variables; 512 B are kept for the project's own.
_ENVIRONMENT_BYTES = 4096 - 512
_PATTERN_CHARACTERS = 2048  # EventBridge's default quota for one event pattern

# key -> (low, high) for the integer settings; bounds are AWS's own where AWS has one.
_RANGES: dict[str, tuple[int, int]] = {
    "retry_attempts": (0, 2),  # Lambda async invoke: MaximumRetryAttempts
    "retry_delay_ms": (0, 300_000),  # offline only; five minutes is already generous
    "max_event_age": (60, 21_600),  # Lambda async invoke: MaximumEventAgeInSeconds
    "timeout": (1, 900),  # Lambda Timeout
    "memory": (128, 10_240),  # Lambda MemorySize
}
_SETTINGS = (*_RANGES, "environment", "permissions")
_DEFAULTS_KEYS = frozenset(_SETTINGS)
_FUNCTION_KEYS = frozenset({"handler", "pattern", "on_failure", *_SETTINGS})
_TOP_KEYS = frozenset({"defaults", "functions", "bridge"})

# --------------------------------------------------------------------------- [bridge]

#: Timeout of bridge-forward (s). EventBridge invokes it asynchronously, one event at a
#: time; it allocates a cursor first and writes the event under it after, so a forward
#: that dies in between leaves a hole that lives at most this long.
BRIDGE_FORWARD_TIMEOUT = 30
#: Timeout of the route functions (connect, disconnect, message): API Gateway's
#: integration timeout, past which nothing they do reaches the client anyway.
BRIDGE_ROUTE_TIMEOUT = 29
#: setting -> the variable the bridge functions read it from (AWS and offline alike)
BRIDGE_VARIABLES = {
    "table": "BRIDGE_TABLE",
    "buffer_max_events": "BRIDGE_BUFFER_MAX_EVENTS",
    "buffer_max_bytes": "BRIDGE_BUFFER_MAX_BYTES",
    "session_ttl": "BRIDGE_SESSION_TTL",
    "hole_grace": "BRIDGE_HOLE_GRACE",
    "allowed_ips": "BRIDGE_ALLOWED_IPS",
}
_MB = 1024 * 1024
_DAY = 86_400
# key -> (low, high). A buffer must hold at least one event of EventBridge's largest
# (256 KB), hence 1 MB; a hole is skipped only once the forward that may still write
# it has certainly ended, even retried once, hence more than twice its timeout; past
# an hour a real hole would hold a client's acknowledgement back for no gain.
_BRIDGE_RANGES: dict[str, tuple[int, int]] = {
    "buffer_max_events": (1, 1_000_000),
    "buffer_max_bytes": (_MB, 1024 * _MB),
    "session_ttl": (60, 30 * _DAY),
    "hole_grace": (2 * BRIDGE_FORWARD_TIMEOUT + 1, 3600),
}
_BRIDGE_KEYS = frozenset({*_BRIDGE_RANGES, "allowed_ips"})
# BRIDGE_ALLOWED_IPS shares Lambda's 4 KB of variables with everything else
_ALLOWED_IPS_CHARACTERS = 2048


class SubscriptionsError(ValidationError):
    """A definition that cannot be deployed: ``FILE:LINE: key.path: reason``."""

    def __init__(self, source: str, line: int, key: str, reason: str) -> None:
        self.source = source
        self.line = line
        self.key = key
        self.reason = reason
        where = f"{source}:{line}"
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the definition, with every default already applied."""

    name: str
    handler: str
    pattern: dict[str, Any] | None
    retry_attempts: int = 2
    retry_delay_ms: int = 1000
    max_event_age: int = 21600
    timeout: int = 30
    memory: int = 256
    on_failure: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS

    @property
    def module(self) -> str:
        """The module part of ``handler`` (what Lambda imports)."""
        return self.handler.rpartition(".")[0]

    @property
    def function(self) -> str:
        """The attribute of :attr:`module` that Lambda calls."""
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True)
class BridgeSettings:
    """The ``[bridge]`` table: how much a session's buffer keeps, and for how long.

    ``allowed_ips`` is a second gate after IAM: when not empty, ``$connect`` from a
    source address outside these networks is refused (API Gateway WebSocket APIs take
    no resource policy, so the connect function checks it). Networks are normalized
    (``10.1.2.3`` becomes ``10.1.2.3/32``).
    """

    buffer_max_events: int = 10_000
    buffer_max_bytes: int = 50 * _MB
    session_ttl: int = _DAY
    hole_grace: int = 120
    allowed_ips: tuple[str, ...] = ()

    def environment(self, table: str) -> dict[str, str]:
        """The ``BRIDGE_*`` variables of the bridge functions, for a bridge table name."""
        values = {
            "table": table,
            "buffer_max_events": str(self.buffer_max_events),
            "buffer_max_bytes": str(self.buffer_max_bytes),
            "session_ttl": str(self.session_ttl),
            "hole_grace": str(self.hole_grace),
            "allowed_ips": ",".join(self.allowed_ips),
        }
        return {BRIDGE_VARIABLES[key]: value for key, value in values.items()}


@dataclass(frozen=True)
class Subscriptions:
    """Every function of one definition file, in file order, and the bridge settings."""

    functions: dict[str, FunctionSpec]
    source: str
    bridge: BridgeSettings = field(default_factory=BridgeSettings)

    @property
    def subscribers(self) -> list[FunctionSpec]:
        """The functions that get events from the bus (those with a pattern)."""
        return [spec for spec in self.functions.values() if spec.pattern is not None]


# --------------------------------------------------------------------------- line index
#
# tomllib returns plain dicts without positions, so errors are located by scanning
# the text once: every table header (``[a.b]``) and every ``key =`` line is recorded
# under its full key path at its first occurrence. A key path that was not written
# on a line of its own (a key inside an inline table, a missing key) is reported at
# the line of its nearest written ancestor, e.g. the ``[functions.users]`` header.
# Lines inside multi-line strings are skipped so their text cannot fake a key.

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*(?P<key>{_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*(?P<key>{_DOTTED})\s*=(?P<rest>.*)$")
_PART = re.compile(_KEY_PART)
_DECODE_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_END_OF_DOCUMENT = re.compile(r"\s*\(at end of document\)\s*$")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for token in _PART.findall(dotted):
        if token.startswith('"'):
            try:
                token = json.loads(token)
            except ValueError:
                token = token[1:-1]
        elif token.startswith("'"):
            token = token[1:-1]
        parts.append(token)
    return tuple(parts)


def _opens_multiline(rest: str) -> str | None:
    """The delimiter of a multi-line string left open at the end of ``rest``, if any."""
    for delimiter in ('"""', "'''"):
        if rest.count(delimiter) % 2 == 1:
            return delimiter
    return None


class _Lines:
    """Key path -> line number of where it is written (see the comment above)."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        open_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if open_string is not None:
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            header = _HEADER.match(line)
            if header:
                table = _split_key(header["key"])
                self._record(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                self._record(table + _split_key(assign["key"]), number)
                open_string = _opens_multiline(assign["rest"])

    def _record(self, path: tuple[str, ...], number: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], number)

    def of(self, path: tuple[str, ...]) -> int:
        """The line of ``path``, or of its nearest ancestor that is written (else 1)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return 1


# --------------------------------------------------------------------------- parsing


class _Parser:
    """One pass over one file; raises the first error in file order."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = _Lines(text)

    def fail(self, path: tuple[str, ...], reason: str) -> SubscriptionsError:
        return SubscriptionsError(self.source, self.lines.of(path), ".".join(path), reason)

    def table(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table, got {_kind(value)}")
        return value

    def no_unknown_keys(
        self, table: Mapping[str, Any], path: tuple[str, ...], allowed: frozenset[str]
    ) -> None:
        for key in table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.fail((*path, key), f"unknown key (known keys: {known})")

    def settings(self, table: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        """Check the keys shared by ``[defaults]`` and functions; return them as given."""
        checked: dict[str, Any] = {}
        for key, (low, high) in _RANGES.items():
            if key in table:
                value = table[key]
                if not isinstance(value, int) or isinstance(value, bool):
                    raise self.fail((*path, key), f"must be an integer, got {_kind(value)}")
                if not low <= value <= high:
                    raise self.fail((*path, key), f"must be within {low}..{high}, got {value}")
                checked[key] = value
        if "environment" in table:
            checked["environment"] = self.environment(table["environment"], (*path, "environment"))
        if "permissions" in table:
            checked["permissions"] = self.permissions(table["permissions"], (*path, "permissions"))
        return checked

    def environment(self, value: Any, path: tuple[str, ...]) -> dict[str, str]:
        variables = self.table(value, path)
        for name, text in variables.items():
            where = (*path, name)
            if name in PROJECT_VARIABLES:
                raise self.fail(where, "is set by the project from the stage; it can't be set here")
            if name in _LAMBDA_RESERVED_VARIABLES:
                raise self.fail(where, "is reserved by the Lambda runtime")
            if not _VARIABLE.match(name):
                raise self.fail(where, "variable names are letters, digits and _, letter first")
            if not isinstance(text, str):
                raise self.fail(where, f"must be a string, got {_kind(text)} (quote it)")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
        if size > _ENVIRONMENT_BYTES:
            raise self.fail(
                path,
                f"is {size} bytes; Lambda allows 4 KB for all variables, "
                f"so at most {_ENVIRONMENT_BYTES} here",
            )
        return dict(variables)

    def permissions(self, value: Any, path: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array of strings, got {_kind(value)}")
        for item in value:
            if item not in PERMISSIONS:
                known = ", ".join(PERMISSIONS)
                raise self.fail(path, f"unknown permission {_show(item)} (known: {known})")
        return tuple(dict.fromkeys(value))  # deduplicated, in the order written

    def pattern(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        try:
            pattern = validate_pattern(value)
            length = len(json.dumps(pattern, separators=(",", ":")))
            if length > _PATTERN_CHARACTERS:
                raise PatternError(
                    f"is {length} characters; EventBridge allows {_PATTERN_CHARACTERS}"
                )
            return pattern
        except PatternError as error:
            inner = tuple(error.path.split(".")) if error.path else ()
            raise self.fail((*path, *inner), error.reason) from None

    def handler(self, value: Any, path: tuple[str, ...]) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {_kind(value)}")
        parts = value.split(".")
        if len(parts) < 2 or not all(_IDENTIFIER.match(part) for part in parts):
            raise self.fail(path, f'must be "module.function", got {_show(value)}')
        return value

    def function(self, name: str, value: Any, defaults: dict[str, Any]) -> dict[str, Any]:
        path = ("functions", name)
        if not _NAME.match(name):
            raise self.fail(path, "names are 1-40 letters, digits, - and _, letter or digit first")
        if name in RESERVED_NAMES:
            raise self.fail(path, "is reserved for the stack's own function")
        if name.startswith(RESERVED_PREFIX):
            raise self.fail(path, f"names starting with {RESERVED_PREFIX!r} are the bridge's own")
        table = self.table(value, path)
        self.no_unknown_keys(table, path, _FUNCTION_KEYS)
        if "handler" not in table:
            raise self.fail((*path, "handler"), 'is missing (e.g. handler = "module.function")')
        fields: dict[str, Any] = {**defaults, "name": name}
        fields["handler"] = self.handler(table["handler"], (*path, "handler"))
        fields["pattern"] = (
            self.pattern(table["pattern"], (*path, "pattern")) if "pattern" in table else None
        )
        own = self.settings(table, path)
        own_environment = own.pop("environment", {})
        fields.update(own)
        fields["environment"] = {**defaults.get("environment", {}), **own_environment}
        on_failure = table.get("on_failure")
        if on_failure is not None and not isinstance(on_failure, str):
            raise self.fail((*path, "on_failure"), f"must be a string, got {_kind(on_failure)}")
        fields["on_failure"] = on_failure
        return fields

    def bridge(self, value: Any) -> BridgeSettings:
        path = ("bridge",)
        table = self.table(value, path)
        self.no_unknown_keys(table, path, _BRIDGE_KEYS)
        fields: dict[str, Any] = {}
        for key, (low, high) in _BRIDGE_RANGES.items():
            if key not in table:
                continue
            number = table[key]
            if not isinstance(number, int) or isinstance(number, bool):
                raise self.fail((*path, key), f"must be an integer, got {_kind(number)}")
            if not low <= number <= high:
                reason = f"must be within {low}..{high}, got {number}"
                if key == "hole_grace":
                    reason += (
                        f" (more than twice the forward function's timeout of "
                        f"{BRIDGE_FORWARD_TIMEOUT} s, so a cursor it may still write is not "
                        "skipped)"
                    )
                raise self.fail((*path, key), reason)
            fields[key] = number
        if "allowed_ips" in table:
            fields["allowed_ips"] = self.networks(table["allowed_ips"], (*path, "allowed_ips"))
        return BridgeSettings(**fields)

    def networks(self, value: Any, path: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array of CIDR strings, got {_kind(value)}")
        found: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise self.fail(path, f"must hold CIDR strings, got {_kind(item)} {_show(item)}")
            try:
                network = ipaddress.ip_network(item.strip(), strict=True)
            except ValueError as error:
                loose = _loose_network(item)
                hint = f" (did you mean {_show(loose)}?)" if loose else ""
                raise self.fail(path, f"{_show(item)} is not a CIDR: {error}{hint}") from None
            found.append(str(network))
        networks = tuple(dict.fromkeys(found))  # deduplicated, in the order written
        if len(",".join(networks)) > _ALLOWED_IPS_CHARACTERS:
            raise self.fail(
                path,
                f"is longer than {_ALLOWED_IPS_CHARACTERS} characters once joined; it travels "
                "in a Lambda variable (4 KB for all): use wider networks",
            )
        return networks

    def check_failure_targets(self, targets: dict[str, str | None]) -> None:
        for name, target in targets.items():
            if target is None:
                continue
            path = ("functions", name, "on_failure")
            if target == name:
                raise self.fail(path, "a function can't be its own failure destination")
            if target not in targets:
                raise self.fail(path, f"names no function of this file: {_show(target)}")
            chain, seen = [name], {name}
            step = targets[target]
            chain.append(target)
            while step is not None and step not in seen:
                seen.add(step)
                chain.append(step)
                step = targets.get(step)
            if step == name:
                loop = " -> ".join([*chain, name])
                raise self.fail(path, f"failure destinations loop: {loop}")

    def parse(self, text: str) -> Subscriptions:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            message = str(error)
            found = _DECODE_POSITION.search(message)
            # no position means "(at end of document)": the last line
            line = int(found.group(1)) if found else max(1, len(text.splitlines()))
            reason = _DECODE_POSITION.sub("", _END_OF_DOCUMENT.sub("", message))
            raise SubscriptionsError(self.source, line, "", f"invalid TOML: {reason}") from None
        self.no_unknown_keys(document, (), _TOP_KEYS)
        defaults: dict[str, Any] = {}
        if "defaults" in document:
            table = self.table(document["defaults"], ("defaults",))
            self.no_unknown_keys(table, ("defaults",), _DEFAULTS_KEYS)
            defaults = self.settings(table, ("defaults",))
        functions = self.table(document.get("functions", {}), ("functions",))
        fields = {name: self.function(name, value, defaults) for name, value in functions.items()}
        self.check_failure_targets({name: f["on_failure"] for name, f in fields.items()})
        specs = {name: FunctionSpec(**values) for name, values in fields.items()}
        bridge = self.bridge(document["bridge"]) if "bridge" in document else BridgeSettings()
        return Subscriptions(functions=specs, source=self.source, bridge=bridge)


def parse(text: str, source: str = "dynamodb-logs.toml") -> Subscriptions:
    """Parse and validate a definition; ``source`` names the file in error messages."""
    return _Parser(text, source).parse(text)


def error_at(text: str, source: str, path: tuple[str, ...], reason: str) -> SubscriptionsError:
    """An error about ``path`` of an already parsed file, located like parse()'s own.

    For checks that need I/O (is the handler module there?) and so run outside
    :func:`parse`, but must still point at the line the user has to fix.
    """
    return SubscriptionsError(source, _Lines(text).of(path), ".".join(path), reason)


def _loose_network(text: str) -> str | None:
    """The network ``text`` lies in, when it only has host bits set (``10.0.0.1/8``)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return None


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
