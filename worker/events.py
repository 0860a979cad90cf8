"""Lead events: the JSON the CRM (or ``nurture emit``) sends us.

One object, an array of objects, or JSON Lines. Validation errors name the event's
index in its batch and the field.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.addresses import sendable_address
from worker.errors import EventError

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_EVENTS_PER_BATCH = 10_000

BUILTIN_TYPES = frozenset(
    {
        "lead.created",
        "lead.updated",
        "lead.disqualified",
        "lead.requalified",
        "lead.replied",
        "lead.unsubscribed",
        # The person left the CRM (deleted, or erased on request): stop and forget.
        "lead.deleted",
        # A CRM record changed; its properties are read from the CRM's API in the queue.
        "crm.changed",
        "meeting.booked",
        "deal.won",
        "deal.lost",
    }
)


class Lead(BaseModel):
    """A lead as carried by an event; fields left out mean "unchanged"."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=300)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=100)
    # The lead's owner in the CRM, who signs and gets the replies (worker/senders.py).
    # Kept as text: a broken owner address falls back to the configured sender rather
    # than refusing the event.
    owner_name: str | None = Field(default=None, max_length=200)
    owner_email: str | None = Field(default=None, max_length=320)
    owner_title: str | None = Field(default=None, max_length=200)
    owner_meeting_url: str | None = Field(default=None, max_length=2000)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        # Control characters would break the touch ids built from lead ids.
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("must not contain control characters (tabs, newlines, ...)")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Only addresses SendGrid can send to get past the door (worker/addresses.py),
        # so a 202 never hides a dead letter at send time.
        return sendable_address(value)

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$", value):
            raise ValueError(f"{value!r} is not a BCP 47 language tag such as da or da-DK")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as Europe/Copenhagen"
            ) from None
        return value


class Event(BaseModel):
    """One lead event."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=3, max_length=100)
    occurred_at: datetime | None = None
    lead: Lead
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not EVENT_TYPE.match(value):
            raise ValueError(f"{value!r} is not a lowercase dotted name such as lead.created")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("occurred_at needs a time zone offset, e.g. 2026-11-22T09:30:00Z")
        return value.astimezone(UTC) if value is not None else None

    def to_json(self) -> str:
        """Compact JSON for the queue and the store."""
        return self.model_dump_json(exclude_none=True)


class UndecodableLine:
    """Stands in, in a JSON Lines batch, for a line that is not JSON, so that every bad
    line is reported with its index instead of only the first."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def describe_validation(exc: ValidationError, whole: str, unknown_key: str) -> str:
    """Pydantic's errors as ``where: what`` parts joined by ``"; "``.

    Args:
        exc: The validation error.
        whole: What to call the location of an error about the whole object.
        unknown_key: The message for a key the model does not know.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or whole
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_key
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def validate_event(obj: object, index: int = 0) -> Event:
    """Validate one decoded JSON object as an event.

    Raises:
        EventError: Naming the index and every bad field.
    """
    if isinstance(obj, UndecodableLine):
        raise EventError(index, obj.reason)
    if not isinstance(obj, dict):
        raise EventError(index, f"expected a JSON object, got {type(obj).__name__}")
    try:
        event = Event.model_validate(obj)
    except ValidationError as exc:
        raise EventError(
            index,
            describe_validation(
                exc, "(event)", "unknown field; remove it or move it under lead.attributes or data"
            ),
        ) from None
    try:
        # Valid but unstorable (a lone UTF-16 surrogate, absurd nesting): refuse it here,
        # naming the event, rather than fail later while queueing.
        event.to_json()
    except (ValueError, RecursionError) as exc:
        reason = f"cannot be stored as JSON ({type(exc).__name__}: {str(exc)[:200]})"
        raise EventError(index, reason) from None
    return event


def decode_events(raw: bytes | str) -> list[object]:
    """Decode a body holding one JSON object, an array of them, or JSON Lines.

    Raises:
        EventError: When the body is not UTF-8 or not JSON (index is the line for JSON Lines).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(0, f"body is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    text = text.lstrip("\ufeff").strip()
    if not text:
        raise EventError(0, "body is empty; send a JSON object, an array or JSON Lines")
    try:
        decoded = json.loads(text)
    except RecursionError:
        raise EventError(0, "JSON is nested too deeply") from None
    except json.JSONDecodeError as whole_error:
        # Not one JSON document: try JSON Lines.
        items: list[object] = []
        for number, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                if number == 0 and "\n" not in text:
                    raise EventError(
                        0,
                        f"invalid JSON: {whole_error.msg} at line "
                        f"{whole_error.lineno} column {whole_error.colno}",
                    ) from None
                reason = f"line {number + 1} is not valid JSON: {str(exc)[:200]}"
                items.append(UndecodableLine(reason))
        return items
    except ValueError as exc:
        # e.g. an integer of thousands of digits (CPython's int-conversion limit).
        raise EventError(0, f"invalid JSON: {exc}") from None
    if isinstance(decoded, list):
        if len(decoded) > MAX_EVENTS_PER_BATCH:
            raise EventError(
                0, f"batch of {len(decoded)} events; send at most {MAX_EVENTS_PER_BATCH}"
            )
        return decoded
    return [decoded]


def parse_events(raw: bytes | str) -> tuple[list[Event], list[EventError]]:
    """Decode and validate a batch; returns the good events and one error per bad event."""
    try:
        items = decode_events(raw)
    except EventError as exc:
        return [], [exc]
    events: list[Event] = []
    errors: list[EventError] = []
    for index, item in enumerate(items):
        try:
            events.append(validate_event(item, index))
        except EventError as exc:
            errors.append(exc)
    return events, errors
