"""Each lead's timeline: what happened to it, for ``nurture lead``.

One Redis stream per lead (:meth:`Keys.timeline`), one entry per thing that happened,
each entry a single field ``e`` holding JSON: ``kind`` (see :class:`Kind`), ``at``
(unix time by the worker's clock) and what that kind carries.

Bounds and TTL policy:

- at most :data:`TIMELINE_MAXLEN` entries per lead (``XADD ... MAXLEN``, exact
  trimming: the oldest entries go first);
- the stream expires :data:`TIMELINE_TTL_SECONDS` after its last entry (every write
  renews it), so leads nobody hears of for that long leave no timeline behind.

Recording rides on the round trip the hot path makes anyway: the event pipeline's
``applied`` mark (:meth:`ReplayGuard.applied`), the ``advance`` script that finishes a
touch, and the schedule's ``reschedule``. Only the rare paths (a hold-back by the cap,
a SendGrid report) write on their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any, cast

import redis

from worker.store.keys import Keys

#: Entries kept per lead.
TIMELINE_MAXLEN = 200
#: Seconds a timeline lives after its last entry (400 days: a year's report and then some).
TIMELINE_TTL_SECONDS = 400 * 24 * 3600
#: The stream field holding an entry's JSON.
FIELD = "e"


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


def entry(kind: Kind, at: float, **data: Any) -> str:
    """One timeline entry as stored."""
    return json.dumps({"kind": kind.value, "at": at, **data}, default=str, sort_keys=True)


def add_to(pipe: Any, keys: Keys, lead_id: str, entries: Iterable[str]) -> None:
    """Queue the entries' writes on a pipeline the caller executes anyway."""
    key = keys.timeline(lead_id)
    wrote = False
    for item in entries:
        pipe.xadd(key, {FIELD: item}, maxlen=TIMELINE_MAXLEN, approximate=False)
        wrote = True
    if wrote:
        pipe.expire(key, TIMELINE_TTL_SECONDS)


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
        """The lead's entries, oldest first."""
        raw = cast(
            list[tuple[bytes, Mapping[bytes, bytes]]],
            self.redis.xrange(self.keys.timeline(lead_id)),
        )
        out: list[dict[str, Any]] = []
        for _stream_id, fields in raw:
            value = fields.get(FIELD.encode())
            if value is not None:
                out.append(json.loads(value))
        return out
