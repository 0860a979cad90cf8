"""Send windows: the weekdays and local hours in which a sequence may send.

A window is written in the lead's own time zone, e.g. ``{days: mon-fri, hours:
"09:00-17:00"}``. The end time is exclusive. ``24:00`` means "until midnight".

An *overnight* window such as ``22:00-06:00`` is allowed: it opens on each listed day
at 22:00 and closes at 06:00 the next morning, so ``days: fri`` with
``hours: 22:00-06:00`` covers Friday night into Saturday morning.

Daylight saving: local times are turned into instants with
:func:`worker.sequences.durations.resolve_local`, so a window edge that falls into a
spring-forward gap moves forward past it and never names a time that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from worker.errors import did_you_mean
from worker.sequences.durations import resolve_local

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES: dict[str, int] = {
    "mon": 0, "monday": 0,
    "tue": 1, "tues": 1, "tuesday": 1,
    "wed": 2, "weds": 2, "wednesday": 2,
    "thu": 3, "thur": 3, "thurs": 3, "thursday": 3,
    "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5,
    "sun": 6, "sunday": 6,
}  # fmt: skip
# Whole-week shorthands a marketer may reach for.
_DAY_GROUPS: dict[str, frozenset[int]] = {
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
    "weekend": frozenset({5, 6}),
    "daily": frozenset(range(7)),
    "every day": frozenset(range(7)),
    "all": frozenset(range(7)),
}
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")
HOURS_EXAMPLE = '"09:00-17:00"'
DAYS_EXAMPLE = "mon-fri, mon,wed,fri or [mon, wed]"
WINDOW_KEYS = ("days", "hours")


@dataclass(frozen=True)
class SendWindow:
    """When a sequence may send, in the lead's local time.

    Attributes:
        days: Weekdays on which the window opens, 0=Monday .. 6=Sunday.
        start: Local opening time.
        end: Local closing time, exclusive. When ``end <= start`` the window closes on
            the next day (overnight window; ``00:00-24:00`` is stored as start == end
            == 00:00 and means the whole day).
    """

    days: frozenset[int]
    start: time
    end: time

    def __str__(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        end = "24:00" if self.end == time(0) else self.end.strftime("%H:%M")
        return f"{days} {self.start.strftime('%H:%M')}-{end}"

    def _intervals(
        self, first: date, count: int, tz: ZoneInfo
    ) -> Iterable[tuple[datetime, datetime]]:
        """Opening intervals (UTC) of windows that open on ``first`` and the following days."""
        overnight = self.end <= self.start
        for offset in range(count):
            day = first + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = resolve_local(day, self.start, tz)
            closes = resolve_local(day + timedelta(days=1) if overnight else day, self.end, tz)
            # A window lying wholly inside a DST gap has no real time in it that day.
            if closes > opens:
                yield opens, closes

    def is_open(self, when: datetime, tz: ZoneInfo) -> bool:
        """Whether a message may go out at ``when`` (aware) for a lead in ``tz``.

        Raises:
            ValueError: When ``when`` is naive.
        """
        instant = _utc(when)
        # The window that opened yesterday may still be open (overnight windows).
        first = instant.astimezone(tz).date() - timedelta(days=1)
        return any(opens <= instant < closes for opens, closes in self._intervals(first, 2, tz))

    def next_open(self, when: datetime, tz: ZoneInfo) -> datetime:
        """``when`` itself if the window is open then, else the next opening.

        Returns:
            An aware UTC datetime ``>= when`` at which :meth:`is_open` is true.

        Raises:
            ValueError: When ``when`` is naive.
        """
        instant = _utc(when)
        first = instant.astimezone(tz).date() - timedelta(days=1)
        # Two weeks always reach an opening: every listed weekday recurs weekly and a
        # DST gap can swallow at most one day's window per transition.
        for opens, closes in self._intervals(first, 16, tz):
            if closes > instant:
                return max(opens, instant)
        raise ValueError(f"send window {self} never opens")  # pragma: no cover - days is non-empty


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("when must be timezone-aware")
    return when.astimezone(UTC)


def _day(name: str) -> int:
    key = name.strip().lower()
    if key in _DAY_ALIASES:
        return _DAY_ALIASES[key]
    hint = did_you_mean(key, _DAY_ALIASES, code=False)
    raise ValueError(f"{name!r} is not a weekday; {hint}write e.g. {DAYS_EXAMPLE}")


def _days_of(part: str) -> frozenset[int]:
    key = " ".join(part.strip().lower().split())
    if key in _DAY_GROUPS:
        return _DAY_GROUPS[key]
    if "-" in key:
        first_text, _, last_text = key.partition("-")
        first, last = _day(first_text), _day(last_text)
        # fri-mon wraps over the weekend.
        span = (last - first) % 7
        return frozenset((first + i) % 7 for i in range(span + 1))
    return frozenset({_day(key)})


def parse_days(node: Any) -> frozenset[int]:
    """Parse ``mon-fri``, ``mon,wed,fri``, ``fri-mon``, ``weekdays`` or a list of those.

    Raises:
        ValueError: With a message showing the accepted forms.
    """
    if isinstance(node, str):
        parts = [p for p in node.split(",") if p.strip()]
    elif isinstance(node, list):
        parts = []
        for item in node:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a weekday; write e.g. {DAYS_EXAMPLE}")
            parts.extend(p for p in item.split(",") if p.strip())
    else:
        raise ValueError(f"days must be weekday names; write e.g. {DAYS_EXAMPLE}")
    if not parts:
        raise ValueError(f"days is empty; write e.g. {DAYS_EXAMPLE}")
    days: set[int] = set()
    for part in parts:
        days |= _days_of(part)
    return frozenset(days)


def _clock(text: str, whole: str, *, end: bool) -> time:
    match = _CLOCK.match(text.strip())
    if not match:
        raise ValueError(f"{whole!r}: {text.strip()!r} is not a time; write e.g. {HOURS_EXAMPLE}")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if end and hour == 24 and minute == 0:
        return time(0)
    if hour > 23 or minute > 59:
        raise ValueError(
            f"{whole!r}: {text.strip()!r} is not a time of day; "
            f"write times from 00:00 to 24:00, e.g. {HOURS_EXAMPLE}"
        )
    return time(hour, minute)


def parse_hours(node: Any) -> tuple[time, time]:
    """Parse ``"09:00-17:00"`` (also ``9-17``, ``22:00-06:00``, ``00:00-24:00``).

    Raises:
        ValueError: With a message showing the accepted form.
    """
    if not isinstance(node, str) or node.count("-") != 1:
        raise ValueError(
            f"hours must be a start and an end time; write e.g. {HOURS_EXAMPLE} (in quotes)"
        )
    start_text, _, end_text = node.partition("-")
    start = _clock(start_text, node, end=False)
    end = _clock(end_text, node, end=True)
    if start == end and not (start == time(0) and end_text.strip().startswith("24")):
        raise ValueError(
            f'{node!r} opens and closes at the same time; for all day write "00:00-24:00"'
        )
    return start, end


def parse_window(node: Any) -> SendWindow:
    """Parse a ``send_window`` mapping with ``days`` and/or ``hours``.

    A missing ``days`` means every day; missing ``hours`` means all day.

    Raises:
        ValueError: With a message naming the bad part and showing examples.
    """
    if not isinstance(node, Mapping):
        raise ValueError(
            "send_window must be days and hours; "
            f"write e.g. {{days: mon-fri, hours: {HOURS_EXAMPLE}}}"
        )
    unknown = [str(k) for k in node if k not in WINDOW_KEYS]
    if unknown:
        raise ValueError(f"send_window has unknown key {unknown[0]!r}; use days and hours")
    if not node:
        raise ValueError(
            f"send_window is empty; write e.g. {{days: mon-fri, hours: {HOURS_EXAMPLE}}}"
        )
    days = parse_days(node["days"]) if "days" in node else frozenset(range(7))
    start, end = parse_hours(node["hours"]) if "hours" in node else (time(0), time(0))
    return SendWindow(days=days, start=start, end=end)
