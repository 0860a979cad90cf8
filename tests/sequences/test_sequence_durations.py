"""Waits: grammar, elapsed and calendar units, business days, deterministic ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from worker.sequences.durations import Wait, add_business_days, parse_wait

CPH = ZoneInfo("Europe/Copenhagen")
NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", Wait(10, "m")),
        ("10 m", Wait(10, "m")),
        ("0s", Wait(0, "s")),
        ("2h", Wait(2, "h")),
        ("3d", Wait(3, "d")),
        ("1.5h", Wait(1.5, "h")),
        ("3 business days", Wait(3, "business_days")),
        ("1 business day", Wait(1, "business_days")),
        ("3 Business Days", Wait(3, "business_days")),
        ("3 business_days", Wait(3, "business_days")),
        ("  45 minutes ", Wait(45, "m")),
        ("1 minute", Wait(1, "m")),
        ("5 min", Wait(5, "m")),
        ("2 hours", Wait(2, "h")),
        ("1 hour", Wait(1, "h")),
        ("7 days", Wait(7, "d")),
        ("1 day", Wait(1, "d")),
        ("30 seconds", Wait(30, "s")),
        ("1 second", Wait(1, "s")),
        ("2-20h", Wait(2, "h", 20)),
        ("2h-20h", Wait(2, "h", 20)),
        ("2 - 20 hours", Wait(2, "h", 20)),
        ("30m-2h", Wait(30, "m", 120)),
        ("2-4 business days", Wait(2, "business_days", 4)),
    ],
)
def test_parse(text: str, expected: Wait) -> None:
    assert parse_wait(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", "has no unit"),
        ("2-20", "has no unit"),
        ("ten minutes", "is not a wait"),
        ("10 fortnights", "unknown unit 'fortnights'"),
        ("2 weeks", "write days instead, e.g. 14d"),
        ("1 month", "write days instead, e.g. 30d"),
        ("10x", "unknown unit 'x'"),
        ("-5m", "is not a wait"),
        ("20-2h", "must be larger than the first"),
        ("2h-2h", "must be larger than the first"),
        ("1d-30h", "mixes units"),
        ("1.5 business days", "whole numbers"),
        ("1.5d", "whole numbers"),
        ("99999d", "longer than ten years"),
        ("", "is not a wait"),
    ],
)
def test_parse_errors_explain_and_show_examples(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_wait(text)
    assert message in str(caught.value)
    assert "e.g." in str(caught.value) or "check the number" in str(caught.value)


def test_parse_rejects_a_bare_number_from_yaml() -> None:
    with pytest.raises(ValueError, match="has no unit"):
        parse_wait(10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wait", "text"),
    [
        (Wait(10, "m"), "10m"),
        (Wait(1, "business_days"), "1 business day"),
        (Wait(3, "business_days"), "3 business days"),
        (Wait(2, "h", 20), "2-20h"),
        (Wait(1.5, "h"), "1.5h"),
    ],
)
def test_str_round_trips(wait: Wait, text: str) -> None:
    assert str(wait) == text
    assert parse_wait(text) == wait


def test_elapsed_units_add_real_time() -> None:
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert parse_wait("0s").after(start, CPH) == start
    assert parse_wait("90s").after(start, CPH) == start + timedelta(seconds=90)
    assert parse_wait("10m").after(start, CPH) == start + timedelta(minutes=10)
    # 24h across the spring-forward night is 24 real hours, not "same time tomorrow".
    assert parse_wait("24h").after(start, CPH) == start + timedelta(hours=24)


def test_result_is_utc_whatever_the_input_zone() -> None:
    start = datetime(2026, 6, 1, 9, 0, tzinfo=NY)
    result = parse_wait("1h").after(start, CPH)
    assert result.tzinfo == UTC
    assert result == datetime(2026, 6, 1, 14, 0, tzinfo=UTC)


def test_days_keep_local_wall_clock_across_dst() -> None:
    # Saturday 28 March 2026 10:00 in Copenhagen (CET); DST starts the next night.
    start = datetime(2026, 3, 28, 10, 0, tzinfo=CPH)
    result = parse_wait("1d").after(start, CPH)
    assert result.astimezone(CPH) == datetime(2026, 3, 29, 10, 0, tzinfo=CPH)
    assert result - start == timedelta(hours=23)
    # And back in October: a 25-hour day.
    autumn = datetime(2026, 10, 24, 10, 0, tzinfo=CPH)
    assert parse_wait("1d").after(autumn, CPH) - autumn == timedelta(hours=25)


def test_days_landing_in_a_dst_gap_move_forward() -> None:
    start = datetime(2026, 3, 28, 2, 30, tzinfo=CPH)  # 02:30 does not exist on the 29th
    result = parse_wait("1d").after(start, CPH)
    assert result.astimezone(CPH).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)
    assert result > start


def test_days_are_counted_in_the_leads_zone() -> None:
    # 23:30 UTC Friday is already Saturday 08:30 in Tokyo.
    start = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    tokyo = ZoneInfo("Asia/Tokyo")
    result = parse_wait("1 business day").after(start, tokyo)
    assert result.astimezone(tokyo) == datetime(2026, 11, 23, 8, 30, tzinfo=tokyo)  # Monday


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        # Fri 16:00 + 1 business day -> Mon 16:00
        (datetime(2026, 11, 20, 16, 0), 1, datetime(2026, 11, 23, 16, 0)),
        # Sat + 1 -> Mon, Sat + 2 -> Tue (the Nth weekday after)
        (datetime(2026, 11, 21, 10, 0), 1, datetime(2026, 11, 23, 10, 0)),
        (datetime(2026, 11, 21, 10, 0), 2, datetime(2026, 11, 24, 10, 0)),
        # Sun + 1 -> Mon
        (datetime(2026, 11, 22, 23, 0), 1, datetime(2026, 11, 23, 23, 0)),
        # Wed + 3 -> Mon
        (datetime(2026, 11, 18, 9, 0), 3, datetime(2026, 11, 23, 9, 0)),
        # Mon + 5 -> next Mon; Mon + 10 -> the Monday after
        (datetime(2026, 11, 16, 9, 0), 5, datetime(2026, 11, 23, 9, 0)),
        (datetime(2026, 11, 16, 9, 0), 10, datetime(2026, 11, 30, 9, 0)),
        # 0 business days: no wait at all, even on a Saturday
        (datetime(2026, 11, 21, 10, 0), 0, datetime(2026, 11, 21, 10, 0)),
    ],
)
def test_business_days(start: datetime, count: int, expected: datetime) -> None:
    wait = Wait(count, "business_days")
    result = wait.after(start.replace(tzinfo=CPH), CPH)
    assert result.astimezone(CPH) == expected.replace(tzinfo=CPH)


def test_business_days_keep_wall_clock_over_dst_weekend() -> None:
    start = datetime(2026, 3, 27, 9, 0, tzinfo=CPH)  # Friday, CET
    result = parse_wait("1 business day").after(start, CPH)
    assert result.astimezone(CPH).replace(tzinfo=None) == datetime(2026, 3, 30, 9, 0)
    assert result.astimezone(CPH).utcoffset() == timedelta(hours=2)  # CEST by then


def test_add_business_days_counts_weekdays_only() -> None:
    friday = datetime(2026, 11, 20).date()
    assert [add_business_days(friday, n).isoformat() for n in range(4)] == [
        "2026-11-20",
        "2026-11-23",
        "2026-11-24",
        "2026-11-25",
    ]


def test_range_is_deterministic_per_key_and_within_bounds() -> None:
    wait = parse_wait("2-20h")
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    seen = set()
    for n in range(300):
        key = f"enrollment-{n}"
        first = wait.after(start, CPH, key)
        assert first == wait.after(start, CPH, key)  # a retry computes the same time
        assert start + timedelta(hours=2) <= first <= start + timedelta(hours=20)
        assert (first - start).total_seconds() == int((first - start).total_seconds())
        seen.add(first)
    # Spread over the range rather than bunched: both halves are used.
    middle = start + timedelta(hours=11)
    assert any(t < middle for t in seen) and any(t > middle for t in seen)
    assert len(seen) > 250


def test_range_differs_between_keys() -> None:
    wait = parse_wait("2-20h")
    assert wait.pick("a") != wait.pick("b")
    assert wait.pick("a") == wait.pick("a")


def test_business_day_range_picks_whole_days() -> None:
    wait = parse_wait("1-3 business days")
    picks = {wait.pick(f"k{n}") for n in range(100)}
    assert picks == {1.0, 2.0, 3.0}


def test_after_rejects_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_wait("1h").after(datetime(2026, 1, 1), CPH)
