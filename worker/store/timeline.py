"""Each lead's timeline: what happened to it, for ``nurture lead`` and ``nurture report``.

One Redis list per lead (:meth:`Keys.timeline`), oldest first. An element is one
packed entry (:func:`entry`): a compact JSON array ``[code, at, <the kind's fields in a
fixed order>..., {other fields}?]``: a one-letter code for the kind (:data:`CODES`), unix
seconds, then the fields of :data:`FIELDS` by position (trailing empty ones left off),
other times as seconds after ``at``; or the entries of one event as one batch
(:func:`batch`): ``[at, [code, fields...], ...]``. :func:`unpack_all` gives back the
dicts every reader uses (``kind``, ``at``, the fields).

Lean forms leave to the reader what it can rebuild (worker/lead_history.py does, for
``nurture lead``): the event that first stored the lead is coded ``E`` and its
``fields`` entry left off (the lead's data then is the lead hash's with the later
changes undone); a false ``when`` is coded ``W`` (a trigger's) or ``K`` (a step's) with
the rule's fingerprint and the values it read instead of the sentence (:data:`LEAN`);
sequences refused for one reason are one entry; the outbox's Message-ID is stored as
``hex@domain``. Entries of earlier versions (one per element, in full) read as they were.

Older versions kept a stream of JSON objects under the same key: :meth:`Timeline.read`
reads both, and the first write after the upgrade turns the stream into the list
(``lua/timeline_add.lua``, ``lua/advance.lua``), keeping its entries as they were. A
stream cost ~4.7 KB per lead whatever it held (Redis preallocates a stream node); the
list costs what its entries weigh (docs/scale-notes.md, section 4).

Bounds and TTL policy:

- at most :data:`TIMELINE_MAXLEN` elements per lead (``LTRIM`` after each append: the
  oldest go first; a batch whole);
- the list expires :data:`TIMELINE_TTL_SECONDS` after its last entry (every write
  renews it), so leads nobody hears of for that long leave no timeline behind.

Recording rides on the round trip the hot path makes anyway: the event pipeline's
``applied`` mark (:meth:`ReplayGuard.applied`), the ``advance`` script that finishes a
touch, and the schedule's ``reschedule``. Only the rare paths (a hold-back by the cap,
a SendGrid report) write on their own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any, cast

import redis
from redis.cluster import ClusterPipeline

from worker.store.keys import Keys
from worker.store.scripts import script_source

#: List elements kept per lead (an event's entries are one element, trimmed whole).
TIMELINE_MAXLEN = 200
#: Seconds a timeline lives after its last entry (400 days: a year's report and then some).
TIMELINE_TTL_SECONDS = 400 * 24 * 3600
#: The field of an old (stream) timeline's entries holding the entry's JSON.
FIELD = "e"
#: Appends entries, turning an old stream into the list first (sent with EVAL).
_ADD_SCRIPT = script_source("timeline_add")


class Kind(StrEnum):
    """What a timeline entry records."""

    EVENT = "event"  # an event was applied: type, id, source
    FIELDS = "fields"  # the lead's data changed: field -> [before, after]
    ENROLLED = "enrolled"  # sequence, first step, due
    NOT_ENROLLED = "not_enrolled"  # an event triggers the sequence but it did not start: why
    EXITED = "exited"  # sequence, reason
    SUPPRESSED = "suppressed"  # reason
    DISQUALIFIED = "disqualified"  # reason
    DECLINE = "decline"  # the one decline: sequence
    TOUCH = "touch"  # sequence, step, due, outcome (sent/failed/unknown/retry), provider id
    SKIP = "skip"  # sequence, step, reason (condition, window, cap, ...), detail
    PROVIDER = "provider"  # what SendGrid reported: event, sequence, step, provider id


#: The one-letter code each kind is stored under.
CODES = {
    Kind.EVENT: "e",
    Kind.FIELDS: "f",
    Kind.ENROLLED: "n",
    Kind.NOT_ENROLLED: "w",
    Kind.EXITED: "x",
    Kind.SUPPRESSED: "s",
    Kind.DISQUALIFIED: "d",
    Kind.DECLINE: "c",
    Kind.TOUCH: "t",
    Kind.SKIP: "k",
    Kind.PROVIDER: "p",
}
#: The fields each kind stores by position, in this order (others go in a trailing dict).
FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.EVENT: ("type", "id", "source", "occurred"),
    Kind.FIELDS: ("changed",),
    Kind.ENROLLED: ("sequence", "step", "due", "trigger"),
    Kind.NOT_ENROLLED: ("sequence", "why"),
    Kind.EXITED: ("sequence", "reason", "step"),
    Kind.SUPPRESSED: ("reason",),
    Kind.DISQUALIFIED: ("reason",),
    Kind.DECLINE: ("sequence", "reason"),
    Kind.TOUCH: ("sequence", "step", "due", "outcome", "provider", "provider_id", "subject",
                 "detail", "until"),
    Kind.SKIP: ("sequence", "step", "due", "reason", "detail", "until"),
    Kind.PROVIDER: ("event", "type", "sequence", "step", "provider_id"),
}  # fmt: skip
#: A ``when`` that was false, kept as the rule's fingerprint and the values it read
#: (worker/lead_history.py): code -> kind, fields by position, the fields it implies.
LEAN: dict[str, tuple[Kind, tuple[str, ...], dict[str, str]]] = {
    "W": (Kind.NOT_ENROLLED, ("sequence", "rule", "values"), {}),
    "K": (Kind.SKIP, ("sequence", "step", "due", "rule", "values"), {"reason": "condition"}),
}
#: A batch's event that first stored the lead: its ``fields`` entry (naming nothing:
#: the lead's data then is rebuilt, worker/lead_history.py) follows, left off.
_FIRST = "E"
_LAYOUTS = {
    **{code: (kind, FIELDS[kind], {}) for kind, code in CODES.items()},
    **LEAN,
    _FIRST: (Kind.EVENT, FIELDS[Kind.EVENT], {}),
}
#: Times stored as whole seconds after the entry's ``at``.
_TIMES = frozenset({"due", "until", "occurred"})
#: The unique part of the outbox's ``Message-ID`` (worker/delivery/outbox.py), stored
#: as ``<hex>@<domain>`` and given back whole.
_OUTBOX_ID = re.compile(r"<([0-9a-f]{32})\.nurture@([^<>@\s]+)>")
_OUTBOX_SHORT = re.compile(r"([0-9a-f]{32})@([^<>@\s]+)")


def _seconds(value: Any) -> Any:
    """A unix time as whole seconds (what ``nurture lead`` shows); others as they are."""
    return int(value // 1) if isinstance(value, float) and math.isfinite(value) else value


def _pack_change(change: Any) -> Any:
    """``[None, new]`` (a field filled in) as ``new`` (``[new]`` when it is a list);
    other changes (``[old, new]``) as they are."""
    if isinstance(change, list | tuple) and len(change) == 2 and change[0] is None:
        return [change[1]] if isinstance(change[1], list) else change[1]
    return change


def _unpack_change(packed: Any) -> Any:
    if not isinstance(packed, list):
        return [None, packed]
    return [None, packed[0]] if len(packed) == 1 else packed


def _pack_fields(kind: Kind, base: int, data: dict[str, Any]) -> list[Any]:
    """``[code, the kind's fields by position (times after base)..., {others}?]``,
    trailing empty fields left off; a false ``when`` kept lean in its own layout."""
    code, names = CODES[kind], FIELDS[kind]
    for lean, (of, fields, implied) in LEAN.items():
        if of is kind and "rule" in data and all(data.get(k) == v for k, v in implied.items()):
            code, names = lean, fields
            for name in implied:
                data.pop(name)
    values: list[Any] = [code]
    for name in names:
        value = data.pop(name, None)
        if name in _TIMES and isinstance(value, int | float):
            value = _seconds(value) - base
            if name == "occurred" and value == 0:
                value = None  # an event applied when it occurred: read back as ``at``
        elif name == "changed" and isinstance(value, dict):
            value = {k: _pack_change(v) for k, v in value.items()}
        elif name == "provider_id" and isinstance(value, str):
            outbox = _OUTBOX_ID.fullmatch(value)
            value = f"{outbox[1]}@{outbox[2]}" if outbox else value
        values.append(value)
    others = {k: v for k, v in data.items() if v is not None}
    if others:
        values.append(others)
    else:
        while values[-1] is None:
            values.pop()
    return values


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def entry(kind: Kind, at: float, **data: Any) -> str:
    """One timeline entry as stored: ``[code, at, fields by position..., {others}?]``.

    Times are whole seconds (``at``; the others relative to it), a field filled in
    (``[None, new]``) is stored as ``new``, the outbox's ``Message-ID`` as its unique
    part and domain, and trailing empty fields are left off.
    """
    base = _seconds(at)
    code, *values = _pack_fields(kind, base, data)
    return _dumps([code, base, *values])


def batch(at: float, items: Sequence[tuple[Kind, Mapping[str, Any]]]) -> str:
    """Entries recorded together (one event's) as one stored item:
    ``[at, [code, fields...], [code, fields...], ...]``, each entry as :func:`entry`
    packs it without its own time. An ``enrolled`` entry leaves its ``trigger`` off when
    it is the type of the batch's event (the first entry); the event that first stored
    the lead (followed by a ``fields`` entry naming nothing) is coded ``E`` and that
    entry left off."""
    base = _seconds(at)
    out: list[Any] = [base]
    event_type = items[0][1].get("type") if items and items[0][0] is Kind.EVENT else None
    for kind, data in items:
        fields = dict(data)
        if kind is Kind.ENROLLED and event_type is not None and fields.get("trigger") == event_type:
            fields.pop("trigger")
        first = len(out) == 2 and out[1][0] == CODES[Kind.EVENT]
        if first and kind is Kind.FIELDS and fields.get("changed") is None:
            out[1][0] = _FIRST
            continue
        out.append(_pack_fields(kind, base, fields))
    return _dumps(out)


def _unpack_fields(code: str, base: Any, values: list[Any]) -> dict[str, Any]:
    kind, names, implied = _LAYOUTS[code]
    out: dict[str, Any] = {"kind": kind.value, "at": base, **implied}
    for name, item in zip(names, values[: len(names)], strict=False):
        if name in _TIMES and isinstance(item, int | float):
            item = base + item
        elif name == "changed" and isinstance(item, dict):
            item = {k: _unpack_change(v) for k, v in item.items()}
        elif name == "provider_id" and isinstance(item, str):
            short = _OUTBOX_SHORT.fullmatch(item)
            item = f"<{short[1]}.nurture@{short[2]}>" if short else item
        out[name] = item
    if kind is Kind.EVENT and "occurred" not in out and isinstance(base, int | float):
        out["occurred"] = base
    if len(values) > len(names):
        out.update(values[len(names)])
    return out


def unpack(raw: str | bytes) -> dict[str, Any]:
    """A stored single entry as the dict readers use: ``kind``, ``at`` and the fields.
    Takes the packed form and the JSON object older versions wrote (a batch: use
    :func:`unpack_all`)."""
    value = json.loads(raw)
    if isinstance(value, dict):
        return value
    return _unpack_fields(value[0], value[1], value[2:])


def unpack_all(raw: str | bytes) -> list[dict[str, Any]]:
    """The entries of one stored item (a single entry, a batch, or an older JSON
    object), as :func:`unpack` gives them. A batch's ``enrolled`` entry without a
    ``trigger`` gets its event's type; a ``not_enrolled`` entry naming several sequences
    (the lead could not be enrolled in any of them, for one reason) is one per sequence."""
    value = json.loads(raw)
    if isinstance(value, dict):
        return [value]
    if value and isinstance(value[0], str):
        items = [_unpack_fields(value[0], value[1], value[2:])]
    else:
        base = value[0]
        items = [_unpack_fields(part[0], base, part[1:]) for part in value[1:]]
        if items and value[1][0] == _FIRST:
            items.insert(1, {"kind": Kind.FIELDS.value, "at": base})
        if items and items[0]["kind"] == Kind.EVENT.value:
            for item in items:
                if item["kind"] == Kind.ENROLLED.value and item.get("trigger") is None:
                    item["trigger"] = items[0].get("type")
    out: list[dict[str, Any]] = []
    for item in items:
        sequences = item.get("sequence")
        if item["kind"] == Kind.NOT_ENROLLED.value and isinstance(sequences, list):
            out += [{**item, "sequence": sequence} for sequence in sequences]
        else:
            out.append(item)
    return out


def add_to(pipe: Any, keys: Keys, lead_id: str, entries: Iterable[str]) -> None:
    """Queue the entries' write on a pipeline the caller executes anyway.

    On a Redis Cluster (whose pipelines take no scripts) the list is written with plain
    commands: no stream timeline lives there (``nurture migrate state`` turns them into
    lists before an install moves to a cluster, :func:`convert_stream`)."""
    items = list(entries)
    if items and isinstance(pipe, ClusterPipeline):
        key = keys.timeline(lead_id)
        pipe.rpush(key, *items)
        pipe.ltrim(key, -TIMELINE_MAXLEN, -1)
        pipe.expire(key, TIMELINE_TTL_SECONDS)
    elif items:
        pipe.eval(
            _ADD_SCRIPT,
            1,
            keys.timeline(lead_id),
            TIMELINE_MAXLEN,
            TIMELINE_TTL_SECONDS,
            *items,
        )


def convert_stream(client: redis.Redis, key: str) -> None:
    """Turn a timeline an older version wrote as a stream into the list, in place
    (``lua/timeline_add.lua`` with no entries); a list is left as it is."""
    client.eval(_ADD_SCRIPT, 1, key, TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS)


class Timeline:
    """Reads and writes lead timelines."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def add(self, lead_id: str, *entries: str) -> None:
        """Record entries on their own (for the paths without a round trip to ride on)."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        add_to(pipe, self.keys, lead_id, entries)
        pipe.execute()

    def lead_ids(self) -> Iterator[str]:
        """Every lead with a timeline (a SCAN of every node: for reports, never on the
        hot path)."""
        marker = ":tl:"
        for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*{marker}*", count=1000):
            name = cast(bytes, key).decode()
            yield name[name.index(marker) + len(marker) :]

    def read(self, lead_id: str) -> list[dict[str, Any]]:
        """The lead's entries, oldest first (a list; or the stream of older versions)."""
        key = self.keys.timeline(lead_id)
        try:
            items = cast(list[bytes], self.redis.lrange(key, 0, -1))
        except redis.ResponseError:  # WRONGTYPE: a stream written by an older version
            raw = cast(list[tuple[bytes, Mapping[bytes, bytes]]], self.redis.xrange(key))
            items = [v for _, fields in raw if (v := fields.get(FIELD.encode())) is not None]
        return [entry for item in items for entry in unpack_all(item)]
