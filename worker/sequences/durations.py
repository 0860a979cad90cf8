"""Step waits: ``10m``, ``3 business days``, ``2-20h``.

A wait is measured from the trigger (first step) or from the previous step. Elapsed
units (``s``, ``m``, ``h``) add real time; ``d`` and ``business days`` move the lead's
local calendar and keep the wall-clock time, because "3 days later" means "same time
of day, three days on" to a marketer even across a daylight-saving change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Unit = Literal["s", "m", "h", "d", "business_days"]

EXAMPLES = "10m, 2h, 3d, 0s, 3 business days or a range such as 2-20h"

# Every spelling a marketer might use, mapped to the canonical unit.
_ALIASES: dict[str, Unit] = {
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "business day": "business_days",
    "business days": "business_days",
    "business_day": "business_days",
    "business_days": "business_days",
    "business-day": "business_days",
    "business-days": "business_days",
}
# Longer units are left out on purpose (a month has no fixed length); say what to write.
_LONG_UNITS = {
    "w": "14d or 10 business days",
    "wk": "14d or 10 business days",
    "week": "7d or 5 business days",
    "weeks": "14d or 10 business days",
    "month": "30d",
    "months": "60d",
}
_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600}
_NUMBER = r"(\d+(?:\.\d+)?)"
_UNIT = r"([a-z][a-z _-]*?)"
_WAIT = re.compile(
    rf"^{_NUMBER}\s*{_UNIT}?(?:\s*(?:-|–|to)\s*{_NUMBER}\s*{_UNIT}?)?$",
)
# Ten years: longer waits are surely typos and would overflow datetime arithmetic.
_MAX_DAYS = 3650


@dataclass(frozen=True)
class Wait:
    """How long to wait before a step.

    Attributes:
        amount: The number (the lower bound for a range).
        unit: ``s``, ``m``, ``h``, ``d`` (calendar days) or ``business_days``.
        upper: The upper bound of a range such as ``2-20h``; None for a fixed wait.
    """

    amount: float
    unit: Unit
    upper: float | None = None

    def __str__(self) -> str:
        def num(value: float) -> str:
            return f"{value:g}"

        if self.unit == "business_days":
            span = (
                num(self.amount) if self.upper is None else f"{num(self.amount)}-{num(self.upper)}"
            )
            plural = "" if self.upper is None and self.amount == 1 else "s"
            return f"{span} business day{plural}"
        if self.upper is None:
            return f"{num(self.amount)}{self.unit}"
        return f"{num(self.amount)}-{num(self.upper)}{self.unit}"

    def pick(self, jitter_key: str = "") -> float:
        """The amount actually waited: ``amount``, or for a range a value derived from the key.

        The same key always gives the same value, so a retried job schedules the
        same moment; different keys spread uniformly over the range. Day-based
        ranges pick whole days.
        """
        if self.upper is None:
            return self.amount
        digest = hashlib.sha256(jitter_key.encode("utf-8")).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        if self.unit in ("d", "business_days"):
            choices = int(self.upper) - int(self.amount) + 1
            return float(int(self.amount) + int(fraction * choices))
        # Whole seconds keep schedules readable and comparisons exact.
        low = self.amount * _SECONDS[self.unit]
        high = self.upper * _SECONDS[self.unit]
        return round(low + fraction * (high - low)) / _SECONDS[self.unit]

    def after(self, start: datetime, tz: ZoneInfo, jitter_key: str = "") -> datetime:
        """The moment this wait ends when it starts at ``start``.

        Args:
            start: An aware datetime (any zone).
            tz: The lead's time zone; calendar and business days are counted there.
            jitter_key: Seeds the choice within a range (e.g. the enrollment id).

        Returns:
            An aware UTC datetime, never earlier than ``start``.

        Raises:
            ValueError: When ``start`` is naive.
        """
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        amount = self.pick(jitter_key)
        if self.unit in _SECONDS:
            seconds = amount * _SECONDS[self.unit]
            if self.upper is not None:
                seconds = round(seconds)  # undo float noise from pick()
            return (start + timedelta(seconds=seconds)).astimezone(UTC)
        local = start.astimezone(tz)
        days = int(amount)
        if self.unit == "d":
            target = local.date() + timedelta(days=days)
        else:
            target = add_business_days(local.date(), days)
        if target == local.date():
            return start.astimezone(UTC)
        return resolve_local(target, local.time(), tz)


def add_business_days(day: date, count: int) -> date:
    """The ``count``-th weekday (Mon–Fri) after ``day``; ``day`` itself when count is 0.

    From a Saturday, one business day is the Monday after; from a Friday it is the
    Monday too.
    """
    current = day
    remaining = count
    while remaining > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            remaining -= 1
    return current


def resolve_local(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """Turn a local date and wall-clock time into an aware UTC instant.

    A wall time inside a spring-forward gap (e.g. 02:30 in Copenhagen on the last
    Sunday of March) does not exist; ``fold=0`` makes zoneinfo use the offset from
    before the change, which lands the same distance *after* the gap (03:30). An
    ambiguous fall-back time resolves to its first occurrence.
    """
    return datetime.combine(day, wall.replace(fold=0), tzinfo=tz).astimezone(UTC)


def _unit(text: str | None, whole: str) -> Unit | None:
    if text is None:
        return None
    key = re.sub(r"\s+", " ", text.strip())
    if key in _LONG_UNITS:
        raise ValueError(
            f"{whole!r}: {key!r} is not a unit here; write days instead, e.g. {_LONG_UNITS[key]}"
        )
    if key not in _ALIASES:
        raise ValueError(
            f"{whole!r}: unknown unit {key!r}; use s, m, h, d or business days (e.g. {EXAMPLES})"
        )
    return _ALIASES[key]


def parse_wait(text: str) -> Wait:
    """Parse a wait such as ``10m``, ``10 minutes``, ``3 business days`` or ``2-20h``.

    Raises:
        ValueError: With a message naming the problem and showing examples.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} has no unit; write a number and a unit, e.g. {EXAMPLES}")
    whole = text
    match = _WAIT.match(text.strip().lower())
    if not match:
        raise ValueError(f"{whole!r} is not a wait; write a number and a unit, e.g. {EXAMPLES}")
    low_text, low_unit_text, high_text, high_unit_text = match.groups()
    low_unit = _unit(low_unit_text, whole)
    high_unit = _unit(high_unit_text, whole)
    low = float(low_text)
    if high_text is None:
        if low_unit is None:
            raise ValueError(f"{whole!r} has no unit; write e.g. {low_text}m or {low_text}h")
        return _checked(Wait(low, low_unit), whole)
    high = float(high_text)
    unit = high_unit or low_unit
    if unit is None:
        raise ValueError(f"{whole!r} has no unit; write e.g. {low_text}-{high_text}h")
    if low_unit is not None and low_unit != unit:
        if low_unit in _SECONDS and unit in _SECONDS:
            # 30m-2h: express both ends in the smaller unit so the range stays exact.
            small = low_unit if _SECONDS[low_unit] < _SECONDS[unit] else unit
            low = low * _SECONDS[low_unit] / _SECONDS[small]
            high = high * _SECONDS[unit] / _SECONDS[small]
            unit = small
        else:
            raise ValueError(
                f"{whole!r} mixes units that cannot be compared; "
                "use one unit, e.g. 2-4 business days"
            )
    if high <= low:
        raise ValueError(
            f"{whole!r}: the second number of a range must be larger than the first; "
            "write e.g. 2-20h"
        )
    return _checked(Wait(low, unit, high), whole)


def _checked(wait: Wait, whole: str) -> Wait:
    if wait.unit in ("d", "business_days"):
        for value in (wait.amount, wait.upper):
            if value is not None and value != int(value):
                raise ValueError(
                    f"{whole!r}: days must be whole numbers; use hours for parts of a day, e.g. 36h"
                )
    longest = wait.upper if wait.upper is not None else wait.amount
    # Five business days take seven calendar days.
    per_day = {"d": 1.0, "business_days": 7 / 5}
    days = longest * (_SECONDS[wait.unit] / 86400 if wait.unit in _SECONDS else per_day[wait.unit])
    if days > _MAX_DAYS:
        raise ValueError(f"{whole!r} is longer than ten years; check the number")
    return wait
