"""When a step is due: its wait, then its sequence's send window, in the lead's zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from worker.sequences import Sequence, Step


def lead_zone(lead: dict[str, object], default: str) -> ZoneInfo:
    """The lead's time zone, else the default (events already refused bad zones)."""
    name = lead.get("timezone")
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo(default)
    except (ValueError, KeyError):
        return ZoneInfo(default)


def due_time(
    sequence: Sequence, step: Step, start: datetime, zone: ZoneInfo, jitter_key: str
) -> datetime:
    """The time ``step`` is due when its wait starts at ``start``."""
    due = step.wait.after(start, zone, jitter_key)
    return open_slot(sequence, due, zone)


def open_slot(sequence: Sequence, when: datetime, zone: ZoneInfo) -> datetime:
    """``when`` itself, or the next time the sequence's send window is open."""
    if sequence.send_window is None:
        return when
    return sequence.send_window.next_open(when, zone)
