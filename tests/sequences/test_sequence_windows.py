"""Send windows: parsing, opening times in the lead's zone, DST, and a property test."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sequences.windows import SendWindow, parse_days, parse_hours, parse_window

CPH = ZoneInfo("Europe/Copenhagen")
TOKYO = ZoneInfo("Asia/Tokyo")
NY = ZoneInfo("America/New_York")
OFFICE = parse_window({"days": "mon-fri", "hours": "09:00-17:00"})


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=tz)


# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("mon,wed,fri", {0, 2, 4}),
        ("mon, wed, fri", {0, 2, 4}),
        (["mon", "wed"], {0, 2}),
        (["Monday", "friday"], {0, 4}),
        ("fri-mon", {4, 5, 6, 0}),
        ("sun-sun", {6}),
        ("weekdays", {0, 1, 2, 3, 4}),
        ("weekends", {5, 6}),
        ("daily", set(range(7))),
        ("tues,thurs", {1, 3}),
        (["mon-tue", "sat"], {0, 1, 5}),
        ("SAT", {5}),
    ],
)
def test_parse_days(node: object, expected: set[int]) -> None:
    assert parse_days(node) == frozenset(expected)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("mon-fry", "did you mean friday?"),
        ("funday", "is not a weekday"),
        ("", "days is empty"),
        ([], "days is empty"),
        (5, "days must be weekday names"),
        ([1, 2], "is not a weekday"),
    ],
)
def test_parse_days_errors(node: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")) as caught:
        parse_days(node)
    assert "mon-fri" in str(caught.value)  # shows an example


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("09:00-17:00", time(9), time(17)),
        ("9-17", time(9), time(17)),
        ("9:30 - 17:15", time(9, 30), time(17, 15)),
        ("00:00-24:00", time(0), time(0)),
        ("18:00-24:00", time(18), time(0)),
        ("22:00-06:00", time(22), time(6)),
    ],
)
def test_parse_hours(text: str, start: time, end: time) -> None:
    assert parse_hours(text) == (start, end)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("9am-5pm", "is not a time"),
        ("09:00", "a start and an end time"),
        ("25:00-26:00", "not a time of day"),
        ("09:60-10:00", "not a time of day"),
        ("24:00-09:00", "not a time of day"),
        ("09:00-09:00", "same time"),
        ("00:00-00:00", "same time"),
        (540, "a start and an end time"),
    ],
)
def test_parse_hours_errors(node: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(node)


def test_parse_window_defaults_and_errors() -> None:
    assert parse_window({"days": "sat"}) == SendWindow(frozenset({5}), time(0), time(0))
    assert parse_window({"hours": "9-17"}).days == frozenset(range(7))
    for node, message in [
        ("mon-fri", "must be days and hours"),
        ({}, "is empty"),
        ({"day": "mon"}, "unknown key 'day'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_window(node)


def test_str() -> None:
    assert str(OFFICE) == "mon,tue,wed,thu,fri 09:00-17:00"
    assert str(parse_window({"days": "sat", "hours": "18:00-24:00"})) == "sat 18:00-24:00"


# -- opening times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # Inside: the moment itself.
        (local(CPH, 2026, 11, 24, 10, 0), local(CPH, 2026, 11, 24, 10, 0)),
        (local(CPH, 2026, 11, 24, 9, 0), local(CPH, 2026, 11, 24, 9, 0)),  # start inclusive
        # Before opening: the same day at 09:00.
        (local(CPH, 2026, 11, 24, 7, 15), local(CPH, 2026, 11, 24, 9, 0)),
        # At or after closing (end exclusive): next day at 09:00.
        (local(CPH, 2026, 11, 24, 17, 0), local(CPH, 2026, 11, 25, 9, 0)),
        (local(CPH, 2026, 11, 24, 23, 59), local(CPH, 2026, 11, 25, 9, 0)),
        # Friday evening and the weekend: Monday at 09:00.
        (local(CPH, 2026, 11, 27, 17, 30), local(CPH, 2026, 11, 30, 9, 0)),
        (local(CPH, 2026, 11, 28, 12, 0), local(CPH, 2026, 11, 30, 9, 0)),
        (local(CPH, 2026, 11, 29, 23, 0), local(CPH, 2026, 11, 30, 9, 0)),
    ],
)
def test_next_open(when: datetime, expected: datetime) -> None:
    result = OFFICE.next_open(when, CPH)
    assert result == expected
    assert result.tzinfo == UTC
    assert OFFICE.is_open(result, CPH)


def test_is_open() -> None:
    assert OFFICE.is_open(local(CPH, 2026, 11, 24, 12, 0), CPH)
    assert not OFFICE.is_open(local(CPH, 2026, 11, 24, 8, 59), CPH)
    assert not OFFICE.is_open(local(CPH, 2026, 11, 24, 17, 0), CPH)
    assert not OFFICE.is_open(local(CPH, 2026, 11, 28, 12, 0), CPH)  # Saturday


def test_same_instant_differs_by_lead_zone() -> None:
    # Monday 2026-11-23 14:00 UTC: 23:00 in Tokyo (closed), 09:00 in New York (open).
    instant = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert not OFFICE.is_open(instant, TOKYO)
    assert OFFICE.next_open(instant, TOKYO) == local(TOKYO, 2026, 11, 24, 9, 0)
    assert OFFICE.is_open(instant, NY)
    assert OFFICE.next_open(instant, NY) == instant


def test_weekend_in_tokyo_is_still_friday_in_new_york() -> None:
    # Friday 2026-11-27 16:00 UTC: Saturday 01:00 in Tokyo, Friday 11:00 in New York.
    instant = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    assert OFFICE.next_open(instant, TOKYO) == local(TOKYO, 2026, 11, 30, 9, 0)
    assert OFFICE.next_open(instant, NY) == instant


def test_dst_spring_forward_copenhagen() -> None:
    # Sunday 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST.
    window = parse_window({"days": "sun", "hours": "01:00-05:00"})
    before = local(CPH, 2026, 3, 29, 0, 30)
    opens = window.next_open(before, CPH)
    assert opens == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    # The window is only three real hours long that night.
    assert window.is_open(datetime(2026, 3, 29, 2, 59, tzinfo=UTC), CPH)  # 04:59 CEST
    assert not window.is_open(datetime(2026, 3, 29, 3, 0, tzinfo=UTC), CPH)  # 05:00 CEST
    # Office hours on the Monday after start at 09:00 CEST = 07:00 UTC.
    assert OFFICE.next_open(before, CPH) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_dst_fall_back_copenhagen() -> None:
    # Sunday 2026-10-25: clocks fall back from 03:00 CEST to 02:00 CET (02:xx twice).
    window = parse_window({"days": "sun", "hours": "02:30-04:00"})
    opens = window.next_open(local(CPH, 2026, 10, 25, 0, 0), CPH)
    # Opens at the first 02:30 (CEST, 00:30 UTC) and stays open through the repeat.
    assert opens == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert window.is_open(datetime(2026, 10, 25, 1, 45, tzinfo=UTC), CPH)  # 02:45 CET
    assert window.is_open(datetime(2026, 10, 25, 2, 59, tzinfo=UTC), CPH)  # 03:59 CET
    assert not window.is_open(datetime(2026, 10, 25, 3, 0, tzinfo=UTC), CPH)  # 04:00 CET
    # Office hours on Monday 26th: 09:00 CET = 08:00 UTC.
    assert OFFICE.next_open(local(CPH, 2026, 10, 24, 18, 0), CPH) == datetime(
        2026, 10, 26, 8, 0, tzinfo=UTC
    )


def test_window_starting_inside_dst_gap_opens_after_the_gap() -> None:
    # 02:30 does not exist on 2026-03-29 in Copenhagen; the window opens at 03:30 CEST.
    window = parse_window({"days": "sun", "hours": "02:30-06:00"})
    result = window.next_open(local(CPH, 2026, 3, 29, 0, 0), CPH)
    assert result == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert result.astimezone(CPH).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)
    assert window.is_open(result, CPH)
    assert not window.is_open(result - timedelta(seconds=1), CPH)


def test_window_wholly_inside_dst_gap_is_skipped_that_day() -> None:
    # 02:00-03:00 on the spring-forward Sunday never happens: next Sunday instead.
    window = parse_window({"days": "sun", "hours": "02:00-03:00"})
    result = window.next_open(local(CPH, 2026, 3, 29, 0, 0), CPH)
    assert result == local(CPH, 2026, 4, 5, 2, 0)


def test_overnight_window() -> None:
    window = parse_window({"days": "fri", "hours": "22:00-06:00"})
    assert window.is_open(local(CPH, 2026, 11, 27, 23, 0), CPH)  # Friday night
    assert window.is_open(local(CPH, 2026, 11, 28, 5, 59), CPH)  # Saturday early
    assert not window.is_open(local(CPH, 2026, 11, 28, 6, 0), CPH)
    assert not window.is_open(local(CPH, 2026, 11, 28, 23, 0), CPH)  # Saturday night
    assert not window.is_open(local(CPH, 2026, 11, 27, 5, 0), CPH)  # Friday early: Thu's
    assert window.next_open(local(CPH, 2026, 11, 28, 7, 0), CPH) == local(CPH, 2026, 12, 4, 22, 0)


def test_until_midnight_window() -> None:
    window = parse_window({"days": "sat", "hours": "18:00-24:00"})
    assert window.is_open(local(CPH, 2026, 11, 28, 23, 59, 59), CPH)
    assert not window.is_open(local(CPH, 2026, 11, 29, 0, 0), CPH)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE.next_open(datetime(2026, 11, 24, 10, 0), CPH)
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE.is_open(datetime(2026, 11, 24, 10, 0), CPH)


# -- property ------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Copenhagen",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Asia/Kathmandu",  # +05:45
    "America/Santiago",  # DST at midnight
    "Pacific/Apia",  # skipped a whole day in 2011
]
WINDOWS = st.builds(
    lambda days, start, end: SendWindow(frozenset(days), start, end),
    st.sets(st.integers(0, 6), min_size=1),
    st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)


@settings(max_examples=400, deadline=None)
@given(
    window=WINDOWS,
    zone=st.sampled_from(ZONES),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
)
def test_next_open_is_never_earlier_and_always_open(
    window: SendWindow, zone: str, when: datetime
) -> None:
    tz = ZoneInfo(zone)
    instant = when.replace(tzinfo=UTC)
    result = window.next_open(instant, tz)
    assert result >= instant
    assert window.is_open(result, tz)
    assert result.tzinfo == UTC
    if window.is_open(instant, tz):
        assert result == instant
    # Nothing open in between: it is the *next* opening (checked at a few points).
    span = result - instant
    for fraction in (0.25, 0.5, 0.75):
        probe = instant + span * fraction
        if probe < result:
            assert not window.is_open(probe, tz)
