"""bridge.core.inputs on its own: text UTF-8 can carry, nesting, endpoint URLs.

Property tests hold each check to what it promises: any text gives a value or a
ValidationError, nothing else; a URL it accepts is one botocore accepts too.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.errors import ValidationError
from bridge.core.inputs import (
    check_region,
    check_text,
    check_url,
    decode_utf8,
    document_problem,
    may_hold_surrogates,
    parse_json,
    text_problem,
    url_problem,
)


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text ``depth`` containers deep: ``[[[1]]]`` for 3."""
    return "[" * depth + leaf + "]" * depth


# --------------------------------------------------------------------------- text


def test_text_problem_names_the_fault_and_where():
    assert text_problem("plain") is None
    assert text_problem("café ✓ 😀") is None
    assert text_problem("ab\ud800") == (
        "lone surrogate \\ud800 at position 2 is not text UTF-8 can carry"
    )
    # what surrogateescape makes of the byte 0xff in argv or stdin
    assert text_problem(b"n\xff".decode("utf-8", "surrogateescape")) == (
        "byte 0xff at position 1 is not UTF-8"
    )
    with pytest.raises(ValidationError, match=r"^log: lone surrogate \\udfff at position 0"):
        check_text("log", "\udfff")


def test_decode_utf8_is_strict():
    assert decode_utf8("stdin", "é".encode()) == "é"
    with pytest.raises(ValidationError, match=r"^stdin: byte 0xff at position 2 is not UTF-8$"):
        decode_utf8("stdin", b'{"\xff')
    # an encoded surrogate (CESU-style bytes) is not UTF-8 either
    with pytest.raises(ValidationError, match="byte 0xed at position 0"):
        decode_utf8("stdin", b"\xed\xa0\x80")


# --------------------------------------------------------------------------- documents


def test_depth_counts_containers():
    assert document_problem(1, 0) is None
    assert document_problem({}, 1) is None
    assert document_problem({"a": [1]}, 2) is None
    assert document_problem({"a": [1]}, 1) == "nested more than 1 levels deep"
    assert document_problem(json.loads(nested(100)), 100) is None
    assert document_problem(json.loads(nested(101)), 100) == "nested more than 100 levels deep"


def test_document_text_faults_say_where():
    assert document_problem({"a": [{"b": "x\ud800"}]}, 5) == (
        "lone surrogate \\ud800 at position 1 is not text UTF-8 can carry (at a[0].b)"
    )
    assert document_problem({"a": {"k\udcff": 1}}, 5) == (
        "byte 0xff at position 1 is not UTF-8 (in the key 'a.k\\udcff')"
    )
    assert document_problem("\ud800", 5) is not None
    assert document_problem(["\ud800"], 5, text=False) is None  # depth only


def test_parse_json_never_recurses_out():
    """100,000 levels: json itself would raise RecursionError; here it is one reason."""
    with pytest.raises(ValidationError, match=r"^Detail: nested more than 100 levels deep$"):
        parse_json("Detail", nested(100_000), 100)
    with pytest.raises(ValidationError, match=r"^Detail: nested more than 100 levels deep$"):
        parse_json("Detail", nested(101), 100)
    assert parse_json("Detail", nested(100), 100) == json.loads(nested(100))
    with pytest.raises(ValidationError, match=r"^p is not valid JSON: "):
        parse_json("p", "{", 5)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ('{"x": "\\ud800"}', "lone surrogate \\ud800"),  # the JSON escape
        ('{"x": "\\uDC00 tail"}', "lone surrogate \\udc00"),
        ('{"\\ud800": 1}', "in the key"),
        ('{"x": "\ud800"}', "at position 7"),  # the character itself, in the text
    ],
)
def test_parse_json_refuses_lone_surrogates(text, fault):
    with pytest.raises(ValidationError, match="^Detail: ") as raised:
        parse_json("Detail", text, 10)
    assert fault in str(raised.value)


def test_parse_json_keeps_what_is_text():
    assert parse_json("d", '{"x": "\\ud83d\\ude00"}', 5) == {"x": "😀"}  # a valid pair
    assert parse_json("d", '{"x": "\\\\ud800"}', 5) == {"x": "\\ud800"}  # an escaped backslash
    assert may_hold_surrogates('{"x": "\\\\ud800"}')  # only a maybe, settled by the walk
    assert not may_hold_surrogates('{"x": "\\u00e9"}')


json_text = st.one_of(
    st.text(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=12,
    ).map(json.dumps),
    st.integers(0, 3000).map(nested),
)


@given(json_text, st.integers(0, 50))
def test_parse_json_gives_a_value_or_a_validation_error(text, depth):
    try:
        value = parse_json("x", text, depth)
    except ValidationError as error:
        assert str(error).startswith("x")
    else:  # what it returns can be stored: UTF-8 text, within the depth
        assert document_problem(value, depth) is None
        json.dumps(value, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "https://dynamodb.eu-west-1.amazonaws.com",
        "http://localhost:8000/",
        "http://[::1]:8000",
    ],
)
def test_good_urls(url):
    assert check_url("--endpoint-url", url) == url


@pytest.mark.parametrize(
    ("url", "fault"),
    [
        ("http://127.0.0.1:99999", "port out of range 0-65535"),
        ("http://127.0.0.1:abc", "port could not be cast to integer"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://[::1", "invalid ipv6 url"),
        ("ftp://x", "the scheme must be http or https"),
        ("http://", "it names no host"),
        ("notaurl", "the scheme must be http or https"),
        ("http://exa mple.com", "characters a URL cannot"),
        ("http://host\n", "characters a URL cannot"),
        ("http://\udcff", "characters a URL cannot"),
        ("http://-bad-.com", "is not a host name"),
        ("http://u:p@127.0.0.1:8000", "credentials"),
        ("http://127.0.0.1:8000/?x=1", "no query or fragment"),
    ],
)
def test_bad_urls_say_why(url, fault):
    with pytest.raises(ValidationError) as raised:
        check_url("--endpoint-url", url)
    assert str(raised.value).startswith(f"--endpoint-url {url!r} is not a URL like http://")
    assert fault in str(raised.value)


url_like = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "ftp", "", "HTTP"]),
    st.one_of(st.text(max_size=12), st.sampled_from(["127.0.0.1", "[::1]", "localhost"])),
    st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}"), st.text(max_size=4)),
    st.one_of(st.just(""), st.text(max_size=6)),
)


@given(st.one_of(url_like, st.text(max_size=30)))
def test_a_url_accepted_here_is_one_botocore_can_use(url):
    if url_problem(url) is None:
        assert is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)
        urlsplit(url).port  # urllib3 reads it: it must not raise  # noqa: B018


def test_regions():
    assert check_region("--region", "eu-west-1") == "eu-west-1"
    for bad in ("us east", "", "-x", "a" * 64, "eu\udcff"):
        with pytest.raises(ValidationError, match="is not a region name like us-east-1"):
            check_region("--region", bad)
