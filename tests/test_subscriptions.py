"""The subscriptions definition: the packaged file, every validation error, defaults, load()."""

from __future__ import annotations

import re
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from bridge.core.errors import BridgeError, ValidationError
from bridge.core.subscriptions import (
    DEFAULT_PERMISSIONS,
    FunctionSpec,
    SubscriptionsError,
    parse,
)
from bridge.subscriptions import PACKAGED_DEFAULT, default_path, find_handler, load, project_root

USERS_PATTERN = {
    "source": ["dynamodb-log"],
    "detail-type": ["stream changes"],
    "detail": {"log": ["users"]},
}


def toml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --------------------------------------------------------------------------- the default file


def test_packaged_default_declares_users_and_failures() -> None:
    subs = parse(PACKAGED_DEFAULT.read_text(), source=str(PACKAGED_DEFAULT))

    assert list(subs.functions) == ["users", "failures"]
    users, failures = subs.functions["users"], subs.functions["failures"]
    assert users.handler == "bridge.lambdas.users_projection.handler"
    assert (users.module, users.function) == ("bridge.lambdas.users_projection", "handler")
    assert users.pattern == USERS_PATTERN
    assert users.on_failure == "failures"
    assert (users.retry_attempts, users.retry_delay_ms, users.max_event_age) == (2, 1000, 21600)
    assert (users.timeout, users.memory) == (30, 256)
    assert users.permissions == ("log:read", "core:read", "core:write")
    assert failures.handler == "bridge.lambdas.failures.handler"
    assert failures.pattern is None and failures.on_failure is None
    assert failures.permissions == ("core:read", "core:write")
    assert subs.subscribers == [users]
    assert subs.source == str(PACKAGED_DEFAULT)


def test_load_without_a_path_uses_the_cwd_file_else_the_packaged_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_path() == PACKAGED_DEFAULT
    packaged = load()
    assert packaged.source == str(PACKAGED_DEFAULT)
    assert project_root(packaged) == PACKAGED_DEFAULT.parent.parent  # holds the bridge package

    (tmp_path / "dynamodb-logs.toml").write_text(
        toml("""
        [functions.only]
        handler = "bridge.lambdas.failures.handler"
        """)
    )
    assert default_path() == tmp_path / "dynamodb-logs.toml"
    own = load()
    assert list(own.functions) == ["only"]
    assert project_root(own) == tmp_path.resolve()


# --------------------------------------------------------------------------- errors

# (name, text, line, key path, a piece of the reason)
ERRORS = [
    (
        "unknown top-level key",
        """
        [functions.a]
        handler = "m.f"

        [fuctions.b]
        handler = "m.f"
        """,
        4,
        "fuctions",
        "unknown key",
    ),
    (
        "unknown key in defaults",
        """
        [defaults]
        timeout = 10
        retries = 3
        """,
        3,
        "defaults.retries",
        "unknown key",
    ),
    (
        "unknown key in a function",
        """
        [functions.users]
        handler = "m.f"
        patern = { source = ["x"] }
        """,
        3,
        "functions.users.patern",
        "unknown key",
    ),
    (
        "missing handler (reported at the function's header)",
        """
        [defaults]
        timeout = 10

        [functions.users]
        timeout = 5
        """,
        4,
        "functions.users.handler",
        "is missing",
    ),
    (
        "handler without a function part",
        """
        [functions.users]
        handler = "users_projection"
        """,
        2,
        "functions.users.handler",
        '"module.function"',
    ),
    (
        "handler with an empty part",
        """
        [functions.users]
        handler = "bridge..handler"
        """,
        2,
        "functions.users.handler",
        '"module.function"',
    ),
    (
        "handler that is not a string",
        """
        [functions.users]
        handler = 12
        """,
        2,
        "functions.users.handler",
        "must be a string",
    ),
    (
        "bad pattern in an inline table",
        """
        [functions.users]
        handler = "m.f"
        pattern = { source = "dynamodb-log" }
        """,
        3,
        "functions.users.pattern.source",
        "must be an object or an array",
    ),
    (
        "bad pattern in a sub-table (located at the key itself)",
        """
        [functions.users]
        handler = "m.f"

        [functions.users.pattern]
        source = ["dynamodb-log"]

        [functions.users.pattern.detail]
        log = "users"
        """,
        8,
        "functions.users.pattern.detail.log",
        "must be an object or an array",
    ),
    (
        "empty pattern",
        """
        [functions.users]
        handler = "m.f"
        pattern = {}
        """,
        3,
        "functions.users.pattern",
        "empty",
    ),
    (
        "pattern as JSON text that is not JSON",
        """
        [functions.users]
        handler = "m.f"
        pattern = '{"source": ["x"'
        """,
        3,
        "functions.users.pattern",
        "not valid JSON",
    ),
    (
        "retry_attempts above 2",
        """
        [functions.users]
        handler = "m.f"
        retry_attempts = 3
        """,
        3,
        "functions.users.retry_attempts",
        "0..2, got 3",
    ),
    (
        "retry_attempts below 0",
        """
        [functions.users]
        handler = "m.f"
        retry_attempts = -1
        """,
        3,
        "functions.users.retry_attempts",
        "0..2, got -1",
    ),
    (
        "retry_attempts as a boolean",
        """
        [functions.users]
        handler = "m.f"
        retry_attempts = true
        """,
        3,
        "functions.users.retry_attempts",
        "must be an integer, got a boolean",
    ),
    (
        "max_event_age below 60",
        """
        [functions.users]
        handler = "m.f"
        max_event_age = 59
        """,
        3,
        "functions.users.max_event_age",
        "60..21600, got 59",
    ),
    (
        "max_event_age above 21600",
        """
        [functions.users]
        handler = "m.f"
        max_event_age = 21601
        """,
        3,
        "functions.users.max_event_age",
        "60..21600, got 21601",
    ),
    (
        "timeout 0",
        """
        [functions.users]
        handler = "m.f"
        timeout = 0
        """,
        3,
        "functions.users.timeout",
        "1..900, got 0",
    ),
    (
        "timeout above 900",
        """
        [functions.users]
        handler = "m.f"
        timeout = 901
        """,
        3,
        "functions.users.timeout",
        "1..900, got 901",
    ),
    (
        "timeout as a float",
        """
        [functions.users]
        handler = "m.f"
        timeout = 1.5
        """,
        3,
        "functions.users.timeout",
        "must be an integer, got a float",
    ),
    (
        "memory below Lambda's minimum",
        """
        [functions.users]
        handler = "m.f"
        memory = 64
        """,
        3,
        "functions.users.memory",
        "128..10240, got 64",
    ),
    (
        "bad value in defaults",
        """
        [defaults]
        timeout = 1000

        [functions.users]
        handler = "m.f"
        """,
        2,
        "defaults.timeout",
        "1..900, got 1000",
    ),
    (
        "handler in defaults",
        """
        [defaults]
        handler = "m.f"
        """,
        2,
        "defaults.handler",
        "unknown key",
    ),
    (
        "on_failure naming an unknown function",
        """
        [functions.users]
        handler = "m.f"
        on_failure = "failurez"

        [functions.failures]
        handler = "m.f"
        """,
        3,
        "functions.users.on_failure",
        'names no function of this file: "failurez"',
    ),
    (
        "on_failure naming itself",
        """
        [functions.users]
        handler = "m.f"
        on_failure = "users"
        """,
        3,
        "functions.users.on_failure",
        "its own failure destination",
    ),
    (
        "on_failure loop over two functions",
        """
        [functions.a]
        handler = "m.f"
        on_failure = "b"

        [functions.b]
        handler = "m.f"
        on_failure = "a"
        """,
        3,
        "functions.a.on_failure",
        "loop: a -> b -> a",
    ),
    (
        "environment value that is not a string",
        """
        [functions.users]
        handler = "m.f"

        [functions.users.environment]
        GREETING = "hi"
        PAGE_SIZE = 25
        """,
        6,
        "functions.users.environment.PAGE_SIZE",
        "must be a string, got an integer",
    ),
    (
        "environment value that is not a string (inline table)",
        """
        [functions.users]
        handler = "m.f"
        environment = { DEBUG = true }
        """,
        3,
        "functions.users.environment.DEBUG",
        "must be a string, got a boolean",
    ),
    (
        "reserved AWS_ variable",
        """
        [functions.users]
        handler = "m.f"
        environment = { AWS_REGION = "eu-west-1" }
        """,
        3,
        "functions.users.environment.AWS_REGION",
        "reserved by the Lambda runtime",
    ),
    (
        "reserved _HANDLER variable",
        """
        [functions.users]
        handler = "m.f"

        [functions.users.environment]
        _HANDLER = "x.y"
        """,
        5,
        "functions.users.environment._HANDLER",
        "reserved by the Lambda runtime",
    ),
    (
        "environment over Lambda's 4 KB",
        """
        [defaults]
        environment = { BIG = "%s" }
        """
        % ("x" * 4000),
        2,
        "defaults.environment",
        "Lambda allows 4 KB for all variables",
    ),
    (
        "pattern over EventBridge's 2048 characters",
        """
        [functions.users]
        handler = "m.f"
        pattern = { source = ["%s"] }
        """
        % ("s" * 2100),
        3,
        "functions.users.pattern",
        "EventBridge allows 2048",
    ),
    (
        "project variable overridden",
        """
        [functions.users]
        handler = "m.f"

        [functions.users.environment]
        DYNAMODB_CORE_TABLE = "elsewhere"
        """,
        5,
        "functions.users.environment.DYNAMODB_CORE_TABLE",
        "set by the project from the stage",
    ),
    (
        "variable name Lambda refuses",
        """
        [functions.users]
        handler = "m.f"
        environment = { "my-var" = "x" }
        """,
        3,
        "functions.users.environment.my-var",
        "letters, digits and _",
    ),
    (
        "unknown permission",
        """
        [functions.users]
        handler = "m.f"
        permissions = ["core:read", "core:admin"]
        """,
        3,
        "functions.users.permissions",
        'unknown permission "core:admin"',
    ),
    (
        "function named like the stack's publisher",
        """
        [functions.publisher]
        handler = "m.f"
        """,
        1,
        "functions.publisher",
        "reserved for the stack's own function",
    ),
    (
        "function name AWS would refuse",
        """
        [functions."users projection"]
        handler = "m.f"
        """,
        1,
        "functions.users projection",
        "names are 1-40 letters",
    ),
    (
        "a function that is not a table",
        """
        [functions]
        users = "m.f"
        """,
        2,
        "functions.users",
        "must be a table, got a string",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_every_error_names_file_line_key_and_reason(
    text: str, line: int, key: str, reason: str
) -> None:
    assert_refused(toml(text), line, key, reason)


def assert_refused(text: str, line: int, key: str, reason: str) -> None:
    """One line naming file, line, key and reason; bad input (the CLI exits 2)."""
    with pytest.raises(SubscriptionsError) as caught:
        parse(text, source="conf/dynamodb-logs.toml")
    error = caught.value
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"conf/dynamodb-logs.toml:{line}: {key}: "), message
    assert reason in message, message
    assert (error.source, error.line, error.key) == ("conf/dynamodb-logs.toml", line, key)
    assert isinstance(error, ValidationError)


def test_invalid_toml_is_reported_at_its_line() -> None:
    text = toml("""
        [functions.users]
        handler = "m.f"
        timeout = = 3
        """)
    with pytest.raises(SubscriptionsError) as caught:
        parse(text, source="x.toml")
    assert re.match(r"^x\.toml:3: invalid TOML: .+$", str(caught.value)), str(caught.value)


def test_lines_inside_multiline_strings_do_not_fake_keys() -> None:
    text = toml('''
        [functions.users]
        handler = "m.f"
        environment = { NOTE = """
        retry_attempts = 1
        """ }
        retry_attempts = 9
        ''')
    with pytest.raises(SubscriptionsError) as caught:
        parse(text)
    # the real key (line 6), not the look-alike inside the string (line 4)
    assert str(caught.value).startswith("dynamodb-logs.toml:6: functions.users.retry_attempts")


def test_dotted_keys_are_located_too() -> None:
    text = toml("""
        functions.users.handler = "m.f"
        functions.users.memory = 1
        """)
    with pytest.raises(SubscriptionsError, match=r"^dynamodb-logs.toml:2: functions.users.memory"):
        parse(text)


# --------------------------------------------------------------------------- defaults


def test_defaults_apply_to_every_function_and_functions_override_them() -> None:
    subs = parse(
        toml("""
        [defaults]
        retry_attempts = 0
        retry_delay_ms = 50
        max_event_age = 120
        timeout = 5
        memory = 512
        permissions = ["core:write"]
        environment = { STAGE_NOTE = "from defaults", SHARED = "defaults" }

        [functions.a]
        handler = "pkg.a.handle"
        pattern = '{"source": ["dynamodb-log"], "detail": {"log": [{"prefix": "us"}]}}'
        timeout = 60
        environment = { SHARED = "a" }

        [functions.b]
        handler = "pkg.b.handle"
        retry_attempts = 2
        permissions = ["bus:put", "log:write", "bus:put"]
        """)
    )
    a, b = subs.functions["a"], subs.functions["b"]

    assert a == FunctionSpec(
        name="a",
        handler="pkg.a.handle",
        pattern={"source": ["dynamodb-log"], "detail": {"log": [{"prefix": "us"}]}},
        retry_attempts=0,
        retry_delay_ms=50,
        max_event_age=120,
        timeout=60,
        memory=512,
        on_failure=None,
        environment={"STAGE_NOTE": "from defaults", "SHARED": "a"},
        permissions=("core:write",),
    )
    assert (b.retry_attempts, b.timeout, b.memory, b.max_event_age) == (2, 5, 512, 120)
    assert b.environment == {"STAGE_NOTE": "from defaults", "SHARED": "defaults"}
    assert b.permissions == ("bus:put", "log:write")  # deduplicated, order kept
    assert b.pattern is None
    assert subs.subscribers == [a]


def test_without_defaults_the_contract_defaults_hold() -> None:
    spec = parse('[functions.x]\nhandler = "m.f"\n').functions["x"]
    assert (spec.retry_attempts, spec.retry_delay_ms, spec.max_event_age) == (2, 1000, 21600)
    assert (spec.timeout, spec.memory, spec.environment) == (30, 256, {})
    assert spec.permissions == DEFAULT_PERMISSIONS


def test_an_empty_file_has_no_functions() -> None:
    subs = parse("# nothing yet\n")
    assert subs.functions == {} and subs.subscribers == []


# --------------------------------------------------------------------------- load()


def make_project(root: Path, package: str, module_source: str, definition: str) -> Path:
    """A user project: a package with one handler module and a definition file."""
    (root / package).mkdir(parents=True)
    # importing the package would fail: load() must find handlers without importing
    (root / package / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (root / package / "handlers.py").write_text(textwrap.dedent(module_source))
    path = root / "dynamodb-logs.toml"
    path.write_text(toml(definition))
    return path


def test_load_finds_user_handlers_without_importing_them(tmp_path: Path) -> None:
    package = f"shop_{uuid.uuid4().hex[:8]}"
    path = make_project(
        tmp_path,
        package,
        """
        import json

        def audit(event, context):
            return json.dumps(event)

        if True:
            from json import dumps as conditional
        """,
        f"""
        [functions.audit]
        handler = "{package}.handlers.audit"
        on_failure = "failures"

        [functions.imported]
        handler = "{package}.handlers.conditional"

        [functions.failures]
        handler = "bridge.lambdas.failures.handler"
        """,
    )
    subs = load(path)

    assert list(subs.functions) == ["audit", "imported", "failures"]
    assert project_root(subs) == tmp_path.resolve()
    assert package not in sys.modules
    location = find_handler(subs.functions["audit"], tmp_path)
    assert location is not None and not location.in_bridge
    assert location.origin == (tmp_path / package / "handlers.py").resolve()
    assert location.top_level == (tmp_path / package).resolve()
    bridge_location = find_handler(subs.functions["failures"], tmp_path)
    assert bridge_location is not None and bridge_location.in_bridge


def test_load_rejects_a_handler_module_that_is_not_there(tmp_path: Path) -> None:
    package = f"shop_{uuid.uuid4().hex[:8]}"
    path = make_project(
        tmp_path,
        package,
        "def audit(event, context):\n    return None\n",
        f"""
        [functions.audit]
        handler = "{package}.handlers.audit"

        [functions.typo]
        timeout = 10
        handler = "{package}.handler.audit"
        """,
    )
    with pytest.raises(SubscriptionsError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:6: functions.typo.handler: module '{package}.handler' ")
    assert "not found" in message


def test_load_rejects_a_module_without_the_function(tmp_path: Path) -> None:
    package = f"shop_{uuid.uuid4().hex[:8]}"
    path = make_project(
        tmp_path,
        package,
        "def audit(event, context):\n    return None\n",
        f"""
        [functions.audit]
        handler = "{package}.handlers.audits"
        """,
    )
    with pytest.raises(SubscriptionsError, match=rf"^{re.escape(str(path))}:2: .*no 'audits'"):
        load(path)


def test_load_rejects_a_missing_bridge_handler_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "dynamodb-logs.toml"
    path.write_text('[functions.x]\nhandler = "bridge.lambdas.nope.handler"\n')
    with pytest.raises(SubscriptionsError, match=r":2: functions.x.handler: module"):
        load(path)
    with pytest.raises(BridgeError, match="no such subscriptions file"):
        load(tmp_path / "missing.toml")


def test_variables_lambda_does_not_reserve_are_allowed() -> None:
    subs = parse(
        '[functions.users]\nhandler = "m.f"\n'
        'environment = { TZ = "Europe/Paris", AWS_XRAY_CONTEXT_MISSING = "LOG_ERROR" }\n'
    )
    assert subs.functions["users"].environment == {
        "TZ": "Europe/Paris",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }


def test_a_pattern_field_named_like_pattern_keeps_its_place_in_the_error() -> None:
    text = (
        '[functions.x]\nhandler = "m.f"\n'
        'pattern = { source = ["a"], patternA = { "bad-op" = 1 } }\n'
    )
    with pytest.raises(SubscriptionsError) as caught:
        parse(text, source="subs.toml")
    assert str(caught.value).startswith("subs.toml:3: functions.x.pattern.patternA.bad-op: ")


# --------------------------------------------------------------------------- [bridge]


def test_without_a_bridge_table_the_bridge_defaults_hold() -> None:
    from bridge.core.subscriptions import BridgeSettings

    for subs in (parse(""), parse('[functions.x]\nhandler = "m.f"\n'), load(PACKAGED_DEFAULT)):
        assert subs.bridge == BridgeSettings()
    defaults = BridgeSettings()
    assert defaults.buffer_max_events == 10_000
    assert defaults.buffer_max_bytes == 52_428_800
    assert defaults.session_ttl == 86_400
    assert defaults.hole_grace == 120
    assert defaults.allowed_ips == ()


def test_the_packaged_file_documents_the_bridge_table_with_its_defaults() -> None:
    """Uncommenting the packaged `# [bridge]` block gives exactly the defaults."""
    from bridge.core.subscriptions import BridgeSettings

    text = PACKAGED_DEFAULT.read_text()
    assert "\n[bridge]" not in text  # commented out: the defaults are the code's
    block = text[text.index("# [bridge]") :]
    lines = [line[2:] for line in block.splitlines() if re.match(r"# (\[|\w)", line)]
    assert lines[0] == "[bridge]"
    written = {line.split("=")[0].strip() for line in lines[1:]}
    assert written == {
        "buffer_max_events",
        "buffer_max_bytes",
        "session_ttl",
        "hole_grace",
        "allowed_ips",
    }
    assert parse("\n".join(lines)).bridge == BridgeSettings()


def test_bridge_settings_are_read_and_networks_normalized() -> None:
    subs = parse(
        toml("""
        [bridge]
        buffer_max_events = 1
        buffer_max_bytes = 1048576
        session_ttl = 2592000
        hole_grace = 61
        allowed_ips = ["203.0.113.7", " 198.51.100.0/24", "2001:db8::/32", "203.0.113.7/32"]
        """)
    )
    bridge = subs.bridge
    assert (bridge.buffer_max_events, bridge.buffer_max_bytes) == (1, 1_048_576)
    assert (bridge.session_ttl, bridge.hole_grace) == (2_592_000, 61)
    # a bare address is its /32, duplicates go, the order written stays
    assert bridge.allowed_ips == ("203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32")
    with pytest.raises(AttributeError):
        bridge.hole_grace = 1  # type: ignore[misc]  # frozen: shared by stack and offline


def test_bridge_settings_become_the_functions_variables() -> None:
    from bridge.core.subscriptions import BRIDGE_VARIABLES, BridgeSettings

    settings = parse(
        '[bridge]\nallowed_ips = ["10.0.0.0/8", "192.0.2.1"]\nsession_ttl = 600\n'
    ).bridge
    assert settings.environment("dev-bridge") == {
        "BRIDGE_TABLE": "dev-bridge",
        "BRIDGE_BUFFER_MAX_EVENTS": "10000",
        "BRIDGE_BUFFER_MAX_BYTES": "52428800",
        "BRIDGE_SESSION_TTL": "600",
        "BRIDGE_HOLE_GRACE": "120",
        "BRIDGE_ALLOWED_IPS": "10.0.0.0/8,192.0.2.1/32",
    }
    assert BridgeSettings().environment("t")["BRIDGE_ALLOWED_IPS"] == ""  # no allowlist
    assert set(BridgeSettings().environment("t")) == set(BRIDGE_VARIABLES.values())


# (name, text, line, key path, a piece of the reason)
BRIDGE_ERRORS = [
    ("not a table", "bridge = 3\n", 1, "bridge", "must be a table, got an integer"),
    (
        "unknown key",
        "[bridge]\nhole_grace = 100\nbuffer_size = 3\n",
        3,
        "bridge.buffer_size",
        "unknown key (known keys: allowed_ips, buffer_max_bytes",
    ),
    (
        "not an integer",
        '[bridge]\nsession_ttl = "1d"\n',
        2,
        "bridge.session_ttl",
        "must be an integer, got a string",
    ),
    ("a boolean", "[bridge]\nbuffer_max_events = true\n", 2, "bridge.buffer_max_events", "boolean"),
    ("a float", "[bridge]\nhole_grace = 90.5\n", 2, "bridge.hole_grace", "got a float"),
    (
        "no events",
        "[bridge]\nbuffer_max_events = 0\n",
        2,
        "bridge.buffer_max_events",
        "within 1..1000000, got 0",
    ),
    (
        "too many events",
        "[bridge]\nbuffer_max_events = 1000001\n",
        2,
        "bridge.buffer_max_events",
        "within 1..1000000",
    ),
    (
        "a buffer smaller than one large event",
        "[bridge]\nbuffer_max_bytes = 262144\n",
        2,
        "bridge.buffer_max_bytes",
        "within 1048576..1073741824, got 262144",
    ),
    (
        "a buffer over 1 GB",
        "[bridge]\nbuffer_max_bytes = 1073741825\n",
        2,
        "bridge.buffer_max_bytes",
        "within 1048576..1073741824",
    ),
    (
        "a ttl under a minute",
        "[bridge]\nsession_ttl = 59\n",
        2,
        "bridge.session_ttl",
        "60..2592000",
    ),
    (
        "a ttl over 30 days",
        "[bridge]\nsession_ttl = 2592001\n",
        2,
        "bridge.session_ttl",
        "60..2592000",
    ),
    (
        "a grace the forward function may outlive",
        "[bridge]\nhole_grace = 60\n",
        2,
        "bridge.hole_grace",
        "within 61..3600, got 60 (more than twice the forward function's timeout of 30 s",
    ),
    ("a grace over an hour", "[bridge]\nhole_grace = 3601\n", 2, "bridge.hole_grace", "61..3600"),
    (
        "allowed_ips not an array",
        '[bridge]\nallowed_ips = "10.0.0.0/8"\n',
        2,
        "bridge.allowed_ips",
        "must be an array of CIDR strings, got a string",
    ),
    (
        "allowed_ips holding a number",
        "[bridge]\nallowed_ips = [10]\n",
        2,
        "bridge.allowed_ips",
        "must hold CIDR strings, got an integer 10",
    ),
    (
        "not an address",
        '[bridge]\nallowed_ips = ["10.0.0.0/8", "office"]\n',
        2,
        "bridge.allowed_ips",
        '"office" is not a CIDR',
    ),
    (
        "a prefix out of range",
        '[bridge]\nallowed_ips = ["10.0.0.0/33"]\n',
        2,
        "bridge.allowed_ips",
        '"10.0.0.0/33" is not a CIDR',
    ),
    (
        "host bits set (the network is suggested)",
        '[bridge]\nallowed_ips = ["10.1.2.3/8"]\n',
        2,
        "bridge.allowed_ips",
        'has host bits set (did you mean "10.0.0.0/8"?)',
    ),
    (
        "in an inline table, at the bridge line",
        "bridge = { hole_grace = 5 }\n",
        1,
        "bridge.hole_grace",
        "61..3600",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [case[1:] for case in BRIDGE_ERRORS],
    ids=[case[0] for case in BRIDGE_ERRORS],
)
def test_every_bridge_error_names_file_line_key_and_reason(
    text: str, line: int, key: str, reason: str
) -> None:
    # a function after the table: the bridge's errors are not hidden behind the rest
    assert_refused(text + '\n[functions.x]\nhandler = "m.f"\n', line, key, reason)


def test_an_allowlist_too_long_for_a_lambda_variable_is_refused() -> None:
    networks = [f"10.{a}.{b}.0/24" for a in range(10) for b in range(20)]  # 200 × ~12 chars
    text = "[bridge]\nallowed_ips = [" + ", ".join(f'"{n}"' for n in networks) + "]\n"
    with pytest.raises(SubscriptionsError, match=r":2: bridge.allowed_ips: is longer than 2048"):
        parse(text)
    fits = "[bridge]\nallowed_ips = [" + ", ".join(f'"{n}"' for n in networks[:100]) + "]\n"
    assert len(parse(fits).bridge.allowed_ips) == 100


def test_function_names_of_the_bridge_are_reserved() -> None:
    from bridge.core import names

    for name in (*names.BRIDGE_FUNCTIONS, "bridge-live", "bridge-replay", "bridge-x"):
        with pytest.raises(SubscriptionsError) as caught:
            parse(f'[functions.{name}]\nhandler = "m.f"\n', source="s.toml")
        assert str(caught.value) == (
            f"s.toml:1: functions.{name}: names starting with 'bridge-' are the bridge's own"
        )
    assert list(parse('[functions.bridge_x]\nhandler = "m.f"\n').functions) == ["bridge_x"]


def test_load_reads_the_bridge_table_of_a_project_file(tmp_path: Path) -> None:
    path = tmp_path / "dynamodb-logs.toml"
    path.write_text(
        toml("""
        [functions.only]
        handler = "bridge.lambdas.failures.handler"

        [bridge]
        allowed_ips = ["192.0.2.0/24"]
        """)
    )
    assert load(path).bridge.allowed_ips == ("192.0.2.0/24",)
    path.write_text("[bridge]\nhole_grace = 1\n")
    with pytest.raises(SubscriptionsError, match=rf"^{re.escape(str(path))}:2: bridge.hole_grace"):
        load(path)
