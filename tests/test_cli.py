"""The `bridge` command through its real entry point, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BRIDGE = Path(sys.executable).with_name("bridge")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BRIDGE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def where(target) -> list[str]:
    return ["--stage", target.stage, "--endpoint-url", target.dynamodb_endpoint]


def test_a_group_alone_shows_its_help_not_an_error():
    for group in ([], ["tables"], ["failures"]):
        result = run(*group)
        assert result.returncode in (0, 2)  # click ≥ 8.2 exits 2, as for a usage error
        shown = result.stdout + result.stderr
        assert shown.startswith(f"Usage: bridge {' '.join(group)}".rstrip())
        assert "error:" not in shown


def test_help_explains_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("tables", "append", "query", "generate", "demo"):
        assert command in result.stdout


def test_tables_create_is_idempotent(where, target):
    first = run("tables", "create", *where, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["created"] == []  # the fixture made them already
    assert json.loads(first.stdout)["tables"] == [target.log_table, target.core_table]
    second = run("tables", "create", *where)
    assert second.stdout.splitlines() == [
        f"{target.log_table}: exists",
        f"{target.core_table}: exists",
    ]


def test_append_prints_versions_and_conflict_exits_3(where, store):
    ok = run("append", "users", "12", "signup", "--payload", '{"id": "12", "name": "test"}', *where)
    assert (ok.returncode, ok.stdout.strip()) == (0, "1")
    second = run(
        "append",
        "users",
        "12",
        "rename",
        "--payload",
        '{"id": "12"}',
        "--expected-version",
        "1",
        "--json",
        *where,
    )
    assert json.loads(second.stdout) == {"log": "users", "id": "12", "version": 2}
    conflict = run(
        "append",
        "users",
        "12",
        "rename",
        "--payload",
        '{"id": "12"}',
        "--expected-version",
        "1",
        *where,
    )
    assert conflict.returncode == 3
    assert conflict.stderr.strip() == (
        "error: conflict on users#12#stream: version 2 already exists (latest version is 2)"
    )
    assert store.versions("users", "12") == [1, 2]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "error: --payload is not valid JSON: "),
        ("[1, 2]", "error: --payload must be a JSON object"),
        ('{"id": "13"}', "error: payload id '13' does not match the item id '12'"),
    ],
)
def test_bad_payload_is_one_line_exit_2_and_writes_nothing(where, store, payload, message):
    result = run("append", "users", "12", "signup", "--payload", payload, *where)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr
    assert store.table.scan()["Items"] == []


def test_query_json_lines_and_table(where, store):
    store.append("users", "a", "signup", {"id": "a", "loc": 1.5})
    store.append("users", "a", "rename", {"id": "a"})
    store.append("users", "b", "signup", {"id": "b"})
    lines = run("query", "users", "--json", *where).stdout.splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "log": "users",
            "id": "a",
            "version": 1,
            "type": "signup",
            "payload": {"id": "a", "loc": 1.5},
        },
        {"log": "users", "id": "a", "version": 2, "type": "rename", "payload": {"id": "a"}},
        {"log": "users", "id": "b", "version": 1, "type": "signup", "payload": {"id": "b"}},
    ]
    after = run("query", "users", "a", "--after", "1", "--json", *where).stdout.splitlines()
    assert [json.loads(line)["version"] for line in after] == [2]
    whole = run("query", "users", "--after", "1", "--json", *where).stdout.splitlines()
    assert [(json.loads(line)["id"], json.loads(line)["version"]) for line in whole] == [("a", 2)]
    table = run("query", "users", "a", *where)
    assert table.returncode == 0
    assert "signup" in table.stdout and "rename" in table.stdout


def test_generate_is_reproducible_with_a_seed(where, store, moto_url):
    result = run("generate", "--users", "5", "--seed", "42", "--concurrency", "4", "--json", *where)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["users"], summary["events"]) == (5, 20)
    ids = store.ids("users")
    assert len(ids) == 5
    for id in ids:
        assert [i.type for i in store.read("users", id)] == [
            "signup",
            "addPhoneNumber",
            "verifyPhoneNumber",
            "addLocation",
        ]
    from bridge.fake import fake_users

    assert sorted(events[0].id for events in fake_users(5, seed=42)) == ids


def test_missing_table_and_unreachable_endpoint_are_one_line(moto_url, free_tcp_port):
    missing = run("query", "users", "--stage", "nosuchstage", "--endpoint-url", moto_url)
    assert missing.returncode == 1
    assert "bridge tables create" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    down = run(
        "query",
        "users",
        "--endpoint-url",
        f"http://127.0.0.1:{free_tcp_port}",
        env={"AWS_MAX_ATTEMPTS": "1"},
    )
    assert down.returncode == 1
    assert down.stderr.startswith("error: cannot reach http://127.0.0.1:")
    assert "Traceback" not in down.stderr
    # moto answers an unknown region with an HTML error page: one line, not the page.
    odd = run(
        "query",
        "users",
        "--endpoint-url",
        moto_url,
        "--region",
        "mars-1",
        env={"AWS_MAX_ATTEMPTS": "1"},
    )
    assert odd.returncode == 1
    assert odd.stderr.strip() == (
        "error: the endpoint failed with HTTP 500 (a region it does not serve? check --region)"
    )


@pytest.fixture
def free_tcp_port() -> int:
    from bridge.offline.ports import free_port

    return free_port()


@pytest.mark.parametrize("region", [None, "eu-west-1"])  # a shell's AWS_REGION too
def test_demo_runs_the_whole_pipeline(region):
    result = run("demo", "--users", "10", "--json", env={"AWS_REGION": region} if region else None)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["users"] == 10
    assert summary["complete_users"] == 10
    # every event went stream → publisher → bus → projection and archive
    assert summary["published"] == summary["bus_events"] == summary["archived"] == 40
    assert summary["projected_users"] == 10
    # and over the bridge into the client's own SQLite file, each event exactly once
    assert summary["bridged"] == summary["bridged_distinct"] == 40
    assert summary["bridged_exactly_once"] is True


def test_synth_writes_templates_and_deploy_says_what_is_missing(tmp_path):
    result = run("synth", "--stage", "dev", "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    (template,) = json.loads(result.stdout)["templates"]
    body = json.loads(Path(template).read_text())
    assert any(r["Type"] == "AWS::DynamoDB::Table" for r in body["Resources"].values())

    empty = tmp_path / "empty"
    empty.write_text("")
    no_aws = {
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_REGION": "eu-west-1",
    }
    deploy = run("deploy", "--stage", "dev", env=no_aws)
    assert deploy.returncode == 1
    assert len(deploy.stderr.strip().splitlines()) == 1
    assert "credentials" in deploy.stderr.lower()
    local = run("deploy", "--stage", "local")
    assert local.returncode != 0
    assert len(local.stderr.strip().splitlines()) == 1


def test_stored_text_that_looks_like_markup_is_shown_as_written(where, store):
    store.append("users", "m", "signup", {"id": "m", "bio": "[/b] and [bold]x"})
    result = run("query", "users", "m", *where)
    assert result.returncode == 0, result.stderr
    assert "[/b] and [bold]x" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("query", "users", "--endpoint-url", "notaurl"),
        ("offline", "--dynamodb-endpoint", "ftp://x"),
        (
            "append",
            "users",
            "1",
            "t",
            "--payload",
            '{"id": "1", "n": 1e300}',
            "--endpoint-url",
            "http://127.0.0.1:9",
        ),
        ("append", "users", "1"),  # click's own errors are one line too
        ("offline", "--dynamodb-port", "99999"),
        ("offline", "--batch-window", "-1"),
        ("failures", "retry", "3f", "--lambda-endpoint-url", "bogus"),
        ("tables", "create", "--stage", "bad stage!"),
        ("query", "users", "--stage", "a b"),  # the stage, not "no credentials"
        ("deploy", "--stage", "dev", "--config", "missing.toml"),  # before any AWS question
        ("offline", "--config", "missing.toml"),
    ],
)
def test_more_bad_input_is_one_line_exit_2(args):
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_tables_create_refuses_aws():
    result = run("tables", "create", "--stage", "dev")
    assert result.returncode == 1
    assert "come with `bridge deploy --stage dev`" in result.stderr


def test_generate_again_with_the_same_seed_writes_nothing_twice(where, store):
    first = run("generate", "--users", "30", "--seed", "3", "--json", *where)
    assert json.loads(first.stdout)["events"] == 120
    raw = store.table.scan()["Items"]
    again = run("generate", "--users", "31", "--seed", "3", "--json", *where)
    summary = json.loads(again.stdout)
    assert (summary["users"], summary["events"], summary["skipped_users"]) == (1, 4, 30)
    after = store.table.scan()["Items"]
    assert len(after) == 124
    assert all(item in after for item in raw)  # the first run's items untouched
    text = run("generate", "--users", "5", "--seed", "3", *where)
    assert "left 5 users alone: they exist already" in text.stdout


def test_generate_finishes_users_an_interrupted_run_left_part_written(where, store):
    run("generate", "--users", "3", "--seed", "9", *where)
    [id, *_] = store.ids("users")
    for version in (3, 4):  # as if the run had stopped after its second wave
        store.table.delete_item(Key={"pk": f"users#{id}#stream", "sk": version})
    kept = {(i.version, i.type) for i in store.read("users", id)}
    again = json.loads(run("generate", "--users", "3", "--seed", "9", "--json", *where).stdout)
    assert (again["users"], again["events"], again["skipped_users"]) == (1, 2, 2)
    assert store.versions("users", id) == [1, 2, 3, 4]
    assert kept <= {(i.version, i.type) for i in store.read("users", id)}


# --------------------------------------------------------------------------- bad input


def run_raw(
    *args: str | bytes, stdin: bytes = b"", env: dict | None = None, cwd: Path | None = None
):
    """`run` with bytes where a user's shell may pass them: argv items that are not UTF-8
    (Python turns them into lone surrogates) and arbitrary bytes on stdin."""
    result = subprocess.run(
        [str(BRIDGE), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, "AWS_MAX_ATTEMPTS": "1", **(env or {})},
        cwd=cwd,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode("utf-8", "replace")


def one_line_exit_2(code: int, stderr: str) -> str:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: "), stderr
    assert code == 2, stderr
    return stderr.strip()


def deep_json(depth: int) -> bytes:
    return b'{"id": "9", "n": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("payload", "stdin", "file", "message"),
    [
        # the issue's own: a byte that is not UTF-8, on stdin and in argv
        ("-", b'{"id":"9","n":"\xff"}', None, "--payload - (standard input): byte 0xff at"),
        (b'{"id":"9","n":"\xff"}', b"", None, "--payload: byte 0xff at position 15"),
        # the JSON escape of a lone surrogate, from a file, from stdin
        ("@", b"", b'{"id": "9", "n": "\\ud800"}', "lone surrogate \\ud800 at position 0"),
        ("-", b'{"id": "9", "\\udcff": 1}', None, "in the key"),
        ("@", b"", b'{"id": "9", "n": "\xc3"}', "byte 0xc3 at position 18 is not UTF-8"),
        # nested far deeper than json can recurse: from a file, stdin, argv (128 KB cap)
        ("@", b"", deep_json(100_000), "--payload: nested more than 31 levels deep"),
        ("-", deep_json(100_000), None, "--payload: nested more than 31 levels deep"),
        (deep_json(50_000), b"", None, "--payload: nested more than 31 levels deep"),
        ("-", deep_json(32), None, "--payload: nested more than 31 levels deep"),  # DynamoDB's 32
        ("@", b"", b"{" * 5_000_000, "--payload @"),  # read up to a cap, not to the end
    ],
)
def test_payload_that_cannot_be_stored_is_one_line_and_writes_nothing(
    where, store, tmp_path, payload, stdin, file, message
):
    if file is not None:
        path = tmp_path / "payload.json"
        path.write_bytes(file)
        payload = f"@{path}"
    code, _, stderr = run_raw(
        "append", "users", "9", "x", "--payload", payload, *where, stdin=stdin
    )
    assert message in one_line_exit_2(code, stderr)
    assert store.table.scan()["Items"] == []


def test_payload_within_the_limits_is_written(where, store, tmp_path):
    """The same paths still carry what can be stored: 31 levels, UTF-8, a surrogate pair."""
    ok = run_raw(
        "append", "users", "9", "x", "--payload", "-", *where, stdin=deep_json(30)
    )  # 30 lists inside the payload map: 31 levels
    assert ok[0] == 0, ok[2]
    path = tmp_path / "p.json"
    path.write_bytes('{"id": "9", "n": "caf\u00e9 \\ud83d\\ude00"}'.encode())
    assert run_raw("append", "users", "9", "y", "--payload", f"@{path}", *where)[0] == 0
    assert [item.payload.get("n") for item in store.read("users", "9")][1] == "café 😀"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("append", "users", "9", "x", "--payload", '{"id": "9"}', "--expected-version"),
            "--expected-version has 39 digits; DynamoDB numbers hold 38 at most",
        ),
        (
            ("query", "users", "9", "--after"),
            "--after has 39 digits; DynamoDB numbers hold 38 at most",
        ),
        (("query", "users", "--after"), "--after has 39 digits; DynamoDB numbers hold 38 at most"),
    ],
)
def test_versions_beyond_38_digits_are_one_line(where, store, args, message):
    code, _, stderr = run_raw(*args, "1" + "0" * 38, *where)
    assert one_line_exit_2(code, stderr) == f"error: {message}"
    assert store.table.scan()["Items"] == []


def test_the_last_version_dynamodb_can_number(where, store):
    top = "9" * 38
    code, _, stderr = run_raw(
        "append", "users", "9", "x", "--payload", '{"id": "9"}', "--expected-version", top, *where
    )
    assert "has 39 digits; DynamoDB numbers hold 38 at most" in one_line_exit_2(code, stderr)
    code, _, stderr = run_raw("query", "users", "9", "--after", top, *where)
    assert (code, stderr.strip()) == (0, f"no events in users#9 after version {top}")
    assert store.table.scan()["Items"] == []


BAD_URLS = [
    "http://127.0.0.1:99999",
    "http://127.0.0.1:-1",
    "http://127.0.0.1:port",
    "http://[::1",
    "http://exa mple.com",
    "http://127.0.0.1:8000/?q=1",
    b"http://\xff:8000",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(
    "command",
    [
        ("tables", "create"),
        ("append", "users", "1", "t", "--payload", '{"id": "1"}'),
        ("query", "users"),
        ("generate", "--users", "1"),
        ("failures", "list"),
        ("failures", "retry", "3f"),
    ],
)
def test_bad_endpoint_urls_are_one_line_for_every_command(command, url):
    code, _, stderr = run_raw(*command, "--endpoint-url", url)
    assert "--endpoint-url " in one_line_exit_2(code, stderr)


@pytest.mark.parametrize(
    "args",
    [
        ("failures", "retry", "3f", "--lambda-endpoint-url", "http://127.0.0.1:99999"),
        ("offline", "--dynamodb-endpoint", "http://127.0.0.1:99999"),
        ("clean", "--dynamodb-endpoint", "http://127.0.0.1:99999", "--yes"),
        ("query", "users", "--region", "us east 1"),
        ("query", "users", "--region", b"eu\xff"),
        ("query", "users", "--profile", b"dev\xff"),
        ("query", b"us\xffers"),
        ("query", "users", b"\xff"),
        ("append", b"\xff", "1", "t", "--payload", '{"id": "1"}'),
        ("append", "users", "1", b"sign\xffup", "--payload", '{"id": "1"}'),
        ("failures", "retry", b"3f\xff"),
    ],
)
def test_other_bad_options_and_arguments_are_one_line(args, tmp_path):
    (tmp_path / "db").write_bytes(b"local data")  # what offline and clean would touch
    code, _, stderr = run_raw(
        *args, env={"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9"}, cwd=tmp_path
    )
    line = one_line_exit_2(code, stderr)
    assert "99999" in line or "is not UTF-8" in line or "region name" in line
    assert [p.name for p in tmp_path.iterdir()] == ["db"]  # nothing removed, nothing made
    assert (tmp_path / "db").read_bytes() == b"local data"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:99999"),
        ("AWS_ENDPOINT_URL", "localhost:8000"),  # no scheme: a common slip
        ("AWS_REGION", "us east"),
    ],
)
def test_bad_environment_is_named_in_one_line(variable, value):
    env = {"AWS_ENDPOINT_URL_DYNAMODB": "", variable: value}
    code, _, stderr = run_raw("query", "users", env=env)
    assert f"${variable}" in one_line_exit_2(code, stderr)
