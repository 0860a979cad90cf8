"""Leads: their data and flags, the per-lead lock, and the email index.

The lead's data and flags share one hash per lead with its enrollments, send ledger
and received content (:meth:`~worker.store.keys.Keys.lead`); :func:`lead_record` keeps
the data and flags only.

Storage form, converted here (the rest of the worker sees :class:`LeadRecord` as it
always was): ``d`` (the data) is JSON without spaces and without the lead's ``id`` (the
key names it); ``fts`` (field times) is grouped by time, ``{"<time>": [field, ...]}``
with ``attributes.x`` as ``.x``, and, written with the data, the data's fields of the
most common time as ``*`` (a lead's fields mostly arrive together:
``{"1795424400":["*"]}``, ~20 B instead of ~330 B); ``contactable`` and ``seen:*`` times
are whole seconds when they are whole (a listpack packs such an integer in 5 bytes).
With ``hash-max-listpack-value 1024`` (worker/redis_server.py, docs/deployment.md) the
whole hash stays one listpack.
Values written by older versions (``fts`` as ``{field: time}``, times as ``1795424400.0``)
read as before and are packed at the next write.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.commands.core import Script
from redis.typing import EncodableT, FieldT

from worker.store.keys import DATA_FIELD, ENROLLMENT_FIELD, LEDGER_FIELD, RECEIVED_FIELD, Keys

# The lead's flags: fields of the lead hash besides ``d`` (the lead JSON) and the
# enrollment, ledger and received-content fields (:mod:`worker.store.keys`).
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


#: In a group of the packed field times: every field of the lead's data not named in
#: another group (a lead's fields mostly arrive together: ``{"<time>":["*"]}``).
_REST = "*"


def _data_fields(data: Mapping[str, Any]) -> set[str]:
    """The field-time names of the lead's data (``attributes.<key>`` for attributes)."""
    names = {name for name in data if name not in ("id", "attributes")}
    attributes = data.get("attributes")
    if isinstance(attributes, Mapping):
        names.update(_ATTRIBUTE + key for key in attributes)
    return names


def _pack_field_times(raw: str, data: Mapping[str, Any] | None = None) -> str:
    """``{field: time}`` as ``{"<time>": [field, ...]}``, ``attributes.`` as ``.``; with
    the lead's ``data``, the fields of the data sharing the most common time as ``*``
    (when every field of the data has a time: the others are named)."""
    try:
        times = {name: float(when) for name, when in json.loads(raw).items()}
        fields = _data_fields(data or {})
        common = None
        if fields and fields <= set(times):
            common = Counter(times[name] for name in fields).most_common(1)[0][0]
        grouped: dict[str, list[str]] = {}
        for name, when in sorted(times.items()):
            group = grouped.setdefault(repr(when).removesuffix(".0"), [])
            if when == common and name in fields:
                if _REST not in group:
                    group.insert(0, _REST)
                continue
            group.append("." + name[len(_ATTRIBUTE) :] if name.startswith(_ATTRIBUTE) else name)
    except (ValueError, TypeError, AttributeError):
        return raw
    return json.dumps(grouped, ensure_ascii=False, separators=(",", ":"))


def _unpack_field_times(raw: str, data: Mapping[str, Any]) -> str:
    """The ``{field: time}`` JSON the worker writes, from either stored form (``*``:
    the fields of ``data`` not named in another group)."""
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
        if name != _REST
    }
    for when, names in value.items():
        if _REST in names:
            times.update(dict.fromkeys(_data_fields(data) - set(times), float(when)))
    return json.dumps(times, sort_keys=True)


def pack_flag(name: str, value: str, data: Mapping[str, Any] | None = None) -> str:
    """A flag's value as stored (see the module's docstring); ``data``: the lead's data
    written with it (the field times then name only what differs from the rest)."""
    if name == FIELD_TIMES:
        return _pack_field_times(value, data)
    if _is_time_flag(name):
        return _pack_time(value)
    return value


def _unpack_flag(name: str, value: str, data: Mapping[str, Any]) -> str:
    if name == FIELD_TIMES:
        return _unpack_field_times(value, data)
    if _is_time_flag(name) and value.isdigit():
        return str(float(value))
    return value


def pack_data(data: Mapping[str, Any], lead_id: str | None = None) -> str:
    """The lead's data as stored: without its ``id`` when that is ``lead_id`` (the key
    names it; :func:`lead_record` puts it back first)."""
    if lead_id is not None and data.get("id") == lead_id:
        data = {name: value for name, value in data.items() if name != "id"}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def is_flag(name: str) -> bool:
    """Whether a field of the lead hash is one of the lead's flags."""
    return not (
        name in (DATA_FIELD, RECEIVED_FIELD)
        or name.startswith(ENROLLMENT_FIELD)
        or name.startswith(LEDGER_FIELD)
    )


def lead_record(lead_id: str, raw: Any) -> LeadRecord | None:
    """A LeadRecord from a raw HGETALL answer of the lead hash: its data and flags
    (None when it has neither: never seen, or only enrollments and a ledger)."""
    fields = cast(dict[bytes, bytes], raw)
    stored = fields.get(DATA_FIELD.encode())
    data = json.loads(stored or b"{}")
    if stored is not None and "id" not in data:
        data = {"id": lead_id, **data}  # left out when written (pack_data)
    flags = {
        name: _unpack_flag(name, v.decode(), data)
        for k, v in fields.items()
        if is_flag(name := k.decode())
    }
    if stored is None and not flags:
        return None
    return LeadRecord(id=lead_id, data=data, flags=flags)


class LeadStore:
    """Lead hashes, their lock and the email index."""

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Mapping[str, Script]) -> None:
        self.redis = client
        self.keys = keys
        self._erase = scripts["erase_lead"]

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
        written = dict(flags or {})
        if FIELD_TIMES not in written:
            # Stored field times may name the data's fields as "*": rewritten for the
            # new data (rare: the pipeline writes them with every change of data).
            old_data, old_times = self._data_and_times(lead_id)
            if old_times is not None:
                written[FIELD_TIMES] = _unpack_field_times(old_times, old_data)
        pipe = self.redis.pipeline(transaction=False)
        index = self.keys.email_index_field
        if email:
            pipe.hset(self.keys.email_index(email), index(email, lead_id), "1")
        fields: dict[FieldT, EncodableT] = {DATA_FIELD: pack_data(data, lead_id)}
        fields.update({name: pack_flag(name, value, data) for name, value in written.items()})
        pipe.hset(self.keys.lead(lead_id), mapping=fields)
        if old_email and old_email.lower() != email.lower():
            pipe.hdel(self.keys.email_index(old_email), index(old_email, lead_id))
        pipe.execute()

    def _data_and_times(self, lead_id: str) -> tuple[dict[str, Any], str | None]:
        """The stored data and packed field times (None when none)."""
        raw = cast(
            list[bytes | None], self.redis.hmget(self.keys.lead(lead_id), [DATA_FIELD, FIELD_TIMES])
        )
        return json.loads(raw[0] or b"{}"), raw[1].decode() if raw[1] is not None else None

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
        personal data) and the send ledger are kept on the lead hash
        (``lua/erase_lead.lua``, one atomic step)."""
        if email:  # another slot than the lead's keys: not in their transaction
            self.redis.hdel(
                self.keys.email_index(email), self.keys.email_index_field(email, lead_id)
            )
        self._erase(
            keys=[
                self.keys.lead(lead_id),
                self.keys.engagement(lead_id),
                self.keys.variants(lead_id),
                self.keys.timeline(lead_id),
            ],
            args=[part for name, value in tombstone.items() for part in (name, value)],
        )

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
