"""The pure parts of replay: time arguments, pacing, the filter, rewritten items."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.errors import ValidationError
from bridge.core.pacing import Pacer, check_speed
from bridge.core.patterns import PatternError
from bridge.core.replay_filter import ReplayFilter
from bridge.core.rewrite import check_replay_name, entry_of, log_item_of, waves
from bridge.core.timespec import ceil_ms, parse_range, parse_time

NOW = datetime(2026, 12, 1, 11, 37, 51, 123456, tzinfo=UTC)
times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9000, 1, 1),
    timezones=st.just(UTC),
)


# --------------------------------------------------------------------------- timespec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T12:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # no offset: UTC
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250Z", datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-05-01T12:00:00.000001Z", datetime(2024, 5, 1, 12, 0, 0, 1000, tzinfo=UTC)),
        ("now", datetime(2026, 12, 1, 11, 37, 51, 124000, tzinfo=UTC)),
        ("today", datetime(2026, 12, 1, tzinfo=UTC)),
        ("Yesterday", datetime(2026, 11, 30, tzinfo=UTC)),
        ("-2h", datetime(2026, 12, 1, 9, 37, 51, 124000, tzinfo=UTC)),
        ("-30m", datetime(2026, 12, 1, 11, 7, 51, 124000, tzinfo=UTC)),
        ("-1d", datetime(2026, 11, 30, 11, 37, 51, 124000, tzinfo=UTC)),
        ("-1h30m", datetime(2026, 12, 1, 10, 7, 51, 124000, tzinfo=UTC)),
        ("-1w", datetime(2026, 11, 24, 11, 37, 51, 124000, tzinfo=UTC)),
        (" -45s ", datetime(2026, 12, 1, 11, 37, 6, 124000, tzinfo=UTC)),
    ],
)
def test_the_forms(text: str, expected: datetime) -> None:
    assert parse_time("--start", text, NOW) == expected


def test_yesterday_is_the_previous_utc_calendar_day_whatever_the_zone_of_now() -> None:
    just_after_midnight_utc = datetime(2026, 12, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    # 01:00+05:00 is 20:00 UTC on 30 November: yesterday is 29 November
    assert parse_time("--start", "yesterday", just_after_midnight_utc) == datetime(
        2026, 11, 29, tzinfo=UTC
    )
    assert parse_range("yesterday", "today", NOW).start == datetime(2026, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "soon", "-2", "2h", "-h", "+2h", "2024-13-01", "-2x"])
def test_bad_times_name_the_option_and_the_forms(text: str) -> None:
    with pytest.raises(ValidationError, match=r"^--end: .*(ISO 8601|too far|range)"):
        parse_time("--end", text, NOW)


def test_a_relative_time_beyond_any_archive_is_one_error() -> None:
    with pytest.raises(ValidationError, match="too far"):
        parse_time("--start", "-99999999999d", NOW)


def test_bad_range_is_refused_and_open_ends_are_allowed() -> None:
    with pytest.raises(ValidationError, match="bad range"):
        parse_range("-1h", "-2h", NOW)
    with pytest.raises(ValidationError, match="bad range"):
        parse_range("2024-05-01", "2024-05-01T00:00:00Z", NOW)  # end exclusive: empty
    assert parse_range(None, None, NOW).start is None
    assert parse_range("-1h", None, NOW).end is None


@given(times)
def test_an_iso_time_of_the_archive_parses_to_itself(when: datetime) -> None:
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    text = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    assert parse_time("--start", text, NOW) == when
    assert parse_time("--start", text[:-1], NOW) == when  # no offset is UTC


@given(times, times)
def test_rounding_up_to_milliseconds_never_moves_an_event_across_a_bound(
    bound: datetime, event: datetime
) -> None:
    event = event.replace(microsecond=event.microsecond // 1000 * 1000)  # archive times
    assert (event >= bound) == (event >= ceil_ms(bound))
    assert (event < bound) == (event < ceil_ms(bound))


@given(st.integers(0, 10_000), st.sampled_from("wdhms"))
def test_relative_forms_count_back_from_now(n: int, unit: str) -> None:
    seconds = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}[unit]
    assert parse_time("--start", f"-{n}{unit}", NOW) == ceil_ms(
        NOW - timedelta(seconds=n * seconds)
    )


# --------------------------------------------------------------------------- pacing


def test_pacing_scales_gaps_from_the_first_event_and_never_reorders() -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    pacer = Pacer(2.0)
    assert pacer.delay(t0, now=100.0) == 0.0  # anchors
    assert pacer.delay(t0 + timedelta(seconds=10), now=100.0) == pytest.approx(5.0)
    assert pacer.delay(t0 + timedelta(seconds=10), now=104.0) == pytest.approx(1.0)
    assert pacer.delay(t0 + timedelta(seconds=10), now=106.0) == 0.0  # late: at once
    assert Pacer(0.0).delay(t0 + timedelta(days=1), now=0.0) == 0.0
    real_time = Pacer(1.0)
    real_time.delay(t0, 0.0)
    assert real_time.delay(t0 + timedelta(seconds=3), 1.0) == pytest.approx(2.0)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=50), st.floats(0.1, 100))
def test_due_times_are_gaps_over_speed(offsets_ms: list[int], speed: float) -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    pacer = Pacer(speed)
    pacer.delay(t0, now=0.0)
    for ms in sorted(offsets_ms):
        assert pacer.delay(t0 + timedelta(milliseconds=ms), now=0.0) == pytest.approx(
            ms / 1000 / speed
        )


@pytest.mark.parametrize("speed", [-1, float("nan"), float("inf")])
def test_bad_speeds(speed: float) -> None:
    with pytest.raises(ValidationError, match="--speed"):
        check_speed("--speed", speed)


# --------------------------------------------------------------------------- filter


def event(log: str, type_: str) -> dict:
    return {
        "source": "dynamodb-log",
        "detail-type": "stream changes",
        "detail": {"log": log, "type": type_, "key": {"pk": f"{log}#1#stream", "sk": 1}},
    }


def test_the_pattern_selects_what_a_rule_with_it_would_receive() -> None:
    selection = ReplayFilter.of(pattern='{"detail": {"type": [{"prefix": "add"}]}}')
    assert selection.matches(event("users", "addPhoneNumber"))
    assert not selection.matches(event("users", "signup"))
    assert ReplayFilter.of().matches(event("users", "signup"))
    with pytest.raises(PatternError):
        ReplayFilter.of(pattern='{"detail": {"type": "signup"}}')
    assert ReplayFilter.of(logs=("a", "b", "a")).logs == ("a", "b")


# --------------------------------------------------------------------------- rewrite


def test_log_items_waves_and_entries() -> None:
    archived = {
        **event("users", "signup"),
        "time": "2024-05-01T12:00:00Z",
        "resources": [],
        "detail": {
            "log": "users",
            "type": "signup",
            "key": {"pk": "users#1#stream", "sk": 1},
            "payload": {"id": "1", "lat": 1.5},
        },
    }
    item = log_item_of(archived)
    assert item == {
        "pk": "users#1#stream",
        "sk": Decimal(1),
        "log": "users",
        "type": "signup",
        "payload": {"id": "1", "lat": Decimal("1.5")},
    }
    assert log_item_of({"detail": {"log": "x"}}) is None
    entry = entry_of(archived, keep_time=True)
    assert entry["Time"] == "2024-05-01T12:00:00Z" and "Resources" not in entry
    assert "Time" not in entry_of(archived)
    items = [
        {"pk": f"p{n % 3}", "sk": Decimal(v), "log": "l", "type": "t", "payload": {}}
        for n in range(30)
        for v in [n // 3 + 1]
    ]
    calls = waves(list(reversed(items)))
    assert all(len({i["pk"] for i in call}) == len(call) <= 25 for call in calls)
    for pk in ("p0", "p1", "p2"):
        versions = [i["sk"] for call in calls for i in call if i["pk"] == pk]
        assert versions == sorted(versions) == [Decimal(v) for v in range(1, 11)]


def test_replay_names() -> None:
    assert check_replay_name("--name", "sqlite-2024.05_01") == "sqlite-2024.05_01"
    for bad in ("", "a b", "x" * 65, "name\n", 7):
        with pytest.raises(ValidationError):
            check_replay_name("--name", bad)
