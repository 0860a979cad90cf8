"""Leads: their data and flags, the per-lead lock, and the email index.

Storage form, converted here (the rest of the worker sees :class:`LeadRecord` as it
always was): ``data`` is JSON without spaces; ``fts`` (field times) is grouped by time,
``{"<time>": [field, ...]}`` with ``attributes.x`` as ``.x`` (a lead's fields mostly
arrive together: ~110 B instead of ~330 B); ``contactable`` and ``seen:*`` times are
whole seconds when they are whole (a listpack packs such an integer in 5 bytes). With
``hash-max-listpack-value 1024`` (worker/redis_server.py, docs/deployment.md) the whole
hash stays one listpack.
Values written by older versions (``fts`` as ``{field: time}``, times as ``1795424400.0``)
read as before and are packed at the next write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from worker.store.keys import Keys

# Fields of the lead hash besides ``data`` (the lead JSON).
#: Why the lead is suppressed (unsubscribe, bounce...).
SUPPRESSED = "suppressed"
#: The disqualification reason ('' counts as not disqualified).
DISQUALIFIED = "disq"
#: When the lead's one decline was claimed.
DECLINED = "declined"
#: Signature of the data a fit rule judged (a requalification by hand is kept for it).
FIT_SIGNATURE = "fit_sig"
#: When the lead was last touched by a capped email (the frequency cap's clock).
LAST_TOUCH = "last_touch"
#: ``seen:<event type>``: the latest occurred_at of an event type.
SEEN = "seen:"
#: ``held:<ledger field>``: when a touch the frequency cap holds back first fell due.
#: It keeps held-back touches in the order they fell due.
HELD = "held:"
#: JSON: field name (``attributes.<key>`` for attributes) -> the time of the stored value,
#: so fields merge in any arrival order (the latest ``occurred_at`` wins per field).
FIELD_TIMES = "fts"
#: When the lead first became contactable (an address, not suppressed or disqualified):
#: the sequences of its first event start then, once.
CONTACTABLE = "contactable"
#: The CRM merged this lead into the lead named here: its events are kept, it is never
#: mailed; the survivor carries on.
MERGED_INTO = "merged_into"
#: When the lead's personal data was erased (deleted in the CRM, ``nurture forget``).
ERASED = "erased"


@dataclass(frozen=True)
class LeadRecord:
    """A stored lead with its flags."""

    id: str
    data: dict[str, Any]
    flags: dict[str, str]

    @property
    def email(self) -> str | None:
        value = self.data.get("email")
        return str(value) if value else None

    @property
    def suppressed(self) -> str | None:
        return self.flags.get(SUPPRESSED)

    @property
    def disqualified(self) -> str | None:
        """The disqualification reason ('' counts as not disqualified)."""
        return self.flags.get(DISQUALIFIED) or None

    def seen(self, event_type: str) -> float | None:
        value = self.flags.get(SEEN + event_type)
        return float(value) if value else None

    def seen_types(self) -> dict[str, float]:
        """Event type -> latest occurred_at, of every event type the lead has seen."""
        return {k[len(SEEN) :]: float(v) for k, v in self.flags.items() if k.startswith(SEEN)}

    def field_times(self) -> dict[str, float]:
        """Field name -> time of its stored value (see :data:`FIELD_TIMES`)."""
        raw = self.flags.get(FIELD_TIMES)
        return {str(k): float(v) for k, v in json.loads(raw).items()} if raw else {}

    def held(self) -> dict[str, float]:
        """Ledger field -> when it first fell due, of the touches the cap held back."""
        return {k[len(HELD) :]: float(v) for k, v in self.flags.items() if k.startswith(HELD)}


def _is_time_flag(name: str) -> bool:
    return name == CONTACTABLE or name.startswith(SEEN)


def _pack_time(value: str) -> str:
    """``1795424400.0`` -> ``1795424400`` (reads back as the same float)."""
    try:
        number = float(value)
    except ValueError:
        return value
    whole = math.isfinite(number) and number == int(number)
    return str(int(number)) if whole and str(number) == value else value


#: ``attributes.<key>`` is stored as ``.<key>`` in the field times (no lead field's own
#: name starts with a dot).
_ATTRIBUTE = "attributes."


def _pack_field_times(raw: str) -> str:
    """``{field: time}`` as ``{"<time>": [field, ...]}``, ``attributes.`` as ``.``."""
    try:
        times = json.loads(raw)
        grouped: dict[str, list[str]] = {}
        for name, when in sorted(times.items()):
            short = "." + name[len(_ATTRIBUTE) :] if name.startswith(_ATTRIBUTE) else name
            grouped.setdefault(repr(float(when)).removesuffix(".0"), []).append(short)
    except (ValueError, TypeError, AttributeError):
        return raw
    return json.dumps(grouped, ensure_ascii=False, separators=(",", ":"))


def _unpack_field_times(raw: str) -> str:
    """The ``{field: time}`` JSON the worker writes, from either stored form."""
    try:
        value = json.loads(raw)
        grouped = isinstance(value, dict) and any(isinstance(v, list) for v in value.values())
    except ValueError:
        grouped = False  # not JSON: left for field_times() to refuse, as before
    if not grouped:
        return raw
    times = {
        _ATTRIBUTE + name[1:] if name.startswith(".") else name: float(when)
        for when, names in value.items()
        for name in names
    }
    return json.dumps(times, sort_keys=True)


def pack_flag(name: str, value: str) -> str:
    """A flag's value as stored (see the module's docstring)."""
    if name == FIELD_TIMES:
        return _pack_field_times(value)
    if _is_time_flag(name):
        return _pack_time(value)
    return value


def _unpack_flag(name: str, value: str) -> str:
    if name == FIELD_TIMES:
        return _unpack_field_times(value)
    if _is_time_flag(name) and value.isdigit():
        return str(float(value))
    return value


def pack_data(data: Mapping[str, Any]) -> str:
    """The lead's data as stored."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def lead_record(lead_id: str, raw: Any) -> LeadRecord | None:
    """A LeadRecord from a raw HGETALL answer (None for an empty one)."""
    fields = cast(dict[bytes, bytes], raw)
    if not fields:
        return None
    flags = {
        name: _unpack_flag(name, v.decode())
        for k, v in fields.items()
        if (name := k.decode()) != "data"
    }
    data = json.loads(fields.get(b"data", b"{}"))
    return LeadRecord(id=lead_id, data=data, flags=flags)


class LeadStore:
    """Lead hashes, their lock and the email index."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    @contextmanager
    def lock(self, lead_id: str, timeout: float = 30.0) -> Iterator[None]:
        """Serialise work on one lead across threads, processes and hosts."""
        lock = self.redis.lock(
            self.keys.lead_lock(lead_id), timeout=timeout, blocking_timeout=timeout
        )
        if not lock.acquire():
            raise redis.exceptions.LockError(f"lead {lead_id!r} stayed locked for {timeout}s")
        try:
            yield
        finally:
            # Expired while we worked: fine, the work itself is idempotent.
            with suppress(redis.exceptions.LockNotOwnedError):
                lock.release()

    def get(self, lead_id: str) -> LeadRecord | None:
        """The stored lead, or None when never seen."""
        return lead_record(lead_id, self.redis.hgetall(self.keys.lead(lead_id)))

    def save(
        self,
        lead_id: str,
        data: Mapping[str, Any],
        old_email: str | None,
        flags: Mapping[str, str] | None = None,
    ) -> None:
        """Write the lead's data (and ``flags``) and keep the email index current.

        The index entries live in other slots than the lead (``Keys.email_index``), so
        no transaction spans them: in one pipeline, the new address's entry is added
        first, then the lead written, then the old address's entry removed. A crash in
        between leaves at worst an extra entry, which :meth:`by_email` leaves out.
        """
        email = str(data.get("email") or "")
        pipe = self.redis.pipeline(transaction=False)
        index = self.keys.email_index_field
        if email:
            pipe.hset(self.keys.email_index(email), index(email, lead_id), "1")
        fields: dict[FieldT, EncodableT] = {"data": pack_data(data)}
        fields.update({name: pack_flag(name, value) for name, value in (flags or {}).items()})
        pipe.hset(self.keys.lead(lead_id), mapping=fields)
        if old_email and old_email.lower() != email.lower():
            pipe.hdel(self.keys.email_index(old_email), index(old_email, lead_id))
        pipe.execute()

    def set_flags(self, lead_id: str, flags: Mapping[str, str | float | None]) -> None:
        """Set (or, with None, delete) flags on the lead hash."""
        key = self.keys.lead(lead_id)
        pipe = self.redis.pipeline(transaction=True)
        for name, value in flags.items():
            if value is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, pack_flag(name, str(value)))
        pipe.execute()

    def claim_decline(self, lead_id: str, when: float) -> bool:
        """Mark the lead declined; True only the first time (a lead gets one decline)."""
        return bool(self.redis.hsetnx(self.keys.lead(lead_id), DECLINED, str(when)))

    def mark_held(self, lead_id: str, ledger_field: str, since: float) -> None:
        """Remember when a touch the cap holds back first fell due (first time only)."""
        self.redis.hsetnx(self.keys.lead(lead_id), HELD + ledger_field, since)

    def drop_held(self, lead_id: str, *ledger_fields: str) -> None:
        if ledger_fields:
            self.redis.hdel(self.keys.lead(lead_id), *(HELD + f for f in ledger_fields))

    def erase(self, lead_id: str, email: str | None, tombstone: Mapping[str, str]) -> None:
        """Erase a lead's personal data: its data and flags, enrollments (their trigger
        data), received content, what it opened and clicked, its A/B variants, its
        timeline and its place in the email index; only ``tombstone`` (flags without
        personal data) is kept on the lead hash."""
        if email:  # another slot than the lead's keys: not in their transaction
            self.redis.hdel(
                self.keys.email_index(email), self.keys.email_index_field(email, lead_id)
            )
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(
            self.keys.lead(lead_id),
            self.keys.enrollments(lead_id),
            self.keys.received(lead_id),
            self.keys.engagement(lead_id),
            self.keys.variants(lead_id),
            self.keys.timeline(lead_id),
        )
        if tombstone:
            kept: dict[FieldT, EncodableT] = {k: v for k, v in tombstone.items()}
            pipe.hset(self.keys.lead(lead_id), mapping=kept)
        pipe.execute()

    def by_email(self, email: str) -> list[str]:
        """Lead ids that use this address (an index entry whose lead has moved to
        another address since, left by a crash mid-save, is left out)."""
        prefix = self.keys.email_index_field(email, "")
        fields = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.email_index(email)))
        found = sorted(
            name[len(prefix) :] for raw in fields if (name := raw.decode()).startswith(prefix)
        )
        return [
            lead_id
            for lead_id in found
            if (lead := self.get(lead_id)) is None or (lead.email or "").lower() == email.lower()
        ]
