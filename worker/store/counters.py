"""Counters: per sequence and step (sent, failed, delivered, open...) and global ones.

Every counter hash is split into the lead buckets (``Keys.stats(seq, n)``,
``Keys.bucket_counters(n)``): a touch's counts are written in its lead's bucket, in the
slot of the script that writes them; other counts go to a bucket of their own name's.
Readers sum the buckets (one pipelined command per bucket).

Each sequence's stats hashes hold two kinds of fields:

- ``<step>:<counter>``: running totals for ``nurture status`` and ``/metrics``, named in
  the sequence's **field index** (:meth:`Keys.stats_fields`, a set) so that those
  readers fetch just them (``HMGET``), whatever the number of day fields beside them. Every writer
  names a field there (:func:`register_fields`) before it first adds to it; an index
  without its :data:`INDEX_COMPLETE` member (state written before the index existed,
  or the set lost) is rebuilt from the hashes by the next reader;
- **day fields** for ``nurture report``: ``@<YYYY-MM-DD>|<step>|<column>`` (a UTC day,
  a funnel column such as ``sent`` or ``opened``) and the same with ``|<group>=<value>``
  appended, one per group (``locale``, ``source`` always, empty when unset; ``variant``
  when the touch had one). Each is written in the same atomic step as the fact it
  counts (the enrollment's transaction, the ``advance`` script, the webhook's
  ``count_report`` script), so the report's numbers stay exact.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import redis
from redis.commands.core import Script

from worker.store.keys import Keys, crc_bucket
from worker.store.timeline import TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS

#: Global counter: how late the oldest touch of the scheduler's last claim was.
SCHEDULER_LAG = "scheduler_lag_last"
#: Per-step counters of the touches that are not emails to the lead (``Sent.counter``
#: of a ``notify:`` and a ``webhook:`` step): the global ``sent`` and ``lateness_sum``
#: leave them out; :meth:`Counters.global_counters` gives their totals beside it.
OTHER_TOUCHES = ("notified", "posted")
#: First character of the day fields in the stats hashes.
DAY_MARK = "@"
#: Groups every day fact is also counted under (``nurture report --by``).
GROUPS = ("locale", "source")


#: Member of a field index meaning "built from the hashes: complete" (never a field:
#: it starts with :data:`DAY_MARK`).
INDEX_COMPLETE = f"{DAY_MARK}indexed"
#: How long a process trusts that a field it named is in the index before naming it
#: again (one SADD per field and process at most this often): an index lost meanwhile
#: is rebuilt by a reader, and one rebuilt while a write raced it heals within this.
REGISTER_SECONDS = 300.0
#: Per client: (prefix, sequence, field) -> when this process last named it.
_registered: weakref.WeakKeyDictionary[redis.Redis, dict[tuple[str, str, str], float]] = (
    weakref.WeakKeyDictionary()
)


def register_fields(client: redis.Redis, keys: Keys, sequence: str, fields: Iterable[str]) -> None:
    """Name running-total fields in the sequence's field index before adding to them:
    one SADD for the fields this process has not named in :data:`REGISTER_SECONDS`."""
    seen = _registered.setdefault(client, {})
    now = time.monotonic()
    new = [
        name
        for name in fields
        if now - seen.get((keys.prefix, sequence, name), -REGISTER_SECONDS) >= REGISTER_SECONDS
    ]
    if new:
        client.sadd(keys.stats_fields(sequence), *new)
        seen.update(((keys.prefix, sequence, name), now) for name in new)


def day_of(at: float) -> str:
    """The UTC day of a unix time, as the day fields name it (``2026-11-30``)."""
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def report_groups(data: Mapping[str, object] | None, variant: str = "") -> dict[str, str]:
    """What a fact is grouped by: the lead's locale and source now, the A/B variant."""
    groups = {name: str((data or {}).get(name) or "") for name in GROUPS}
    if variant:
        groups["variant"] = variant
    return groups


def day_fields(at: float, step: str, column: str, groups: Mapping[str, str]) -> list[str]:
    """The day fields one fact increments: the total and one per group."""
    base = f"{DAY_MARK}{day_of(at)}|{step}|{column}"
    return [base, *(f"{base}|{name}={value}" for name, value in sorted(groups.items()))]


def stats_sequences(client: redis.Redis, keys: Keys) -> list[str]:
    """Every sequence with stats (one pipelined read of the buckets' indexes)."""
    pipe = client.pipeline(transaction=False)
    for bucket in range(keys.shards):
        pipe.smembers(keys.stats_index(bucket))
    found = cast(list[set[bytes]], pipe.execute())
    return sorted({raw.decode() for members in found for raw in members})


def summed_stats(
    client: redis.Redis, keys: Keys, sequences: Iterable[str] | None = None
) -> dict[str, dict[str, int]]:
    """Sequence id -> its whole stats hash (field -> value, day fields included) summed
    over the buckets; every sequence with stats unless ``sequences`` names them. Two
    pipelined reads, as long as the day fields (:func:`counter_totals` reads without)."""
    buckets = range(keys.shards)
    named = sequences is not None
    names = stats_sequences(client, keys) if sequences is None else list(sequences)
    pipe = client.pipeline(transaction=False)
    for seq in names:
        for bucket in buckets:
            pipe.hgetall(keys.stats(seq, bucket))
    raw = cast(list[dict[bytes, bytes]], pipe.execute())
    out: dict[str, dict[str, int]] = {}
    for i, seq in enumerate(names):
        summed: dict[str, int] = {}
        for values in raw[i * len(buckets) : (i + 1) * len(buckets)]:
            for name, value in values.items():
                field = name.decode()
                summed[field] = summed.get(field, 0) + int(value)
        if summed or named:
            out[seq] = summed
    return out


def indexed_fields(client: redis.Redis, keys: Keys, sequences: list[str]) -> dict[str, list[str]]:
    """Sequence id -> the running-total fields its field index names (sorted), the
    indexes without :data:`INDEX_COMPLETE` rebuilt from the hashes first."""
    pipe = client.pipeline(transaction=False)
    for seq in sequences:
        pipe.smembers(keys.stats_fields(seq))
    found = cast(list[set[bytes]], pipe.execute())
    out = {
        seq: {raw.decode() for raw in members}
        for seq, members in zip(sequences, found, strict=True)
    }
    missing = [seq for seq in sequences if INDEX_COMPLETE not in out[seq]]
    if missing:
        rebuilt = summed_stats(client, keys, missing)
        pipe = client.pipeline(transaction=False)
        for seq in missing:
            names = [name for name in rebuilt[seq] if not name.startswith(DAY_MARK)]
            pipe.sadd(keys.stats_fields(seq), INDEX_COMPLETE, *names)
            out[seq].update(names)
        pipe.execute()
    return {seq: sorted(n for n in got if not n.startswith(DAY_MARK)) for seq, got in out.items()}


def counter_totals(
    client: redis.Redis, keys: Keys, sequences: Iterable[str] | None = None
) -> dict[str, dict[str, int]]:
    """:func:`summed_stats` without the day fields, read by name (``HMGET`` of the field
    index's fields per bucket): its cost does not grow with the days. Every sequence
    with stats unless ``sequences`` names them (those are always in the answer)."""
    buckets = range(keys.shards)
    named = sequences is not None
    names = stats_sequences(client, keys) if sequences is None else list(sequences)
    fields = indexed_fields(client, keys, names)
    pipe = client.pipeline(transaction=False)
    asked = [seq for seq in names if fields[seq]]
    for seq in asked:
        for bucket in buckets:
            pipe.hmget(keys.stats(seq, bucket), fields[seq])
    raw = cast(list[list[bytes | None]], pipe.execute()) if asked else []
    out: dict[str, dict[str, int]] = {seq: {} for seq in names} if named else {}
    for i, seq in enumerate(asked):
        summed: dict[str, int] = {}
        for values in raw[i * len(buckets) : (i + 1) * len(buckets)]:
            for name, value in zip(fields[seq], values, strict=True):
                if value is not None:
                    summed[name] = summed.get(name, 0) + int(value)
        if summed or named:
            out[seq] = summed
    return out


class Counters:
    """Counts kept in Redis hashes."""

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Mapping[str, Script]) -> None:
        self.redis = client
        self.keys = keys
        self._count_report = scripts["count_report"]

    def count(
        self,
        sequence: str,
        step: str,
        counter: str,
        amount: int = 1,
    ) -> None:
        """Add to a per-sequence, per-step counter."""
        bucket = crc_bucket(f"{sequence}:{step}:{counter}", self.keys.shards)
        register_fields(self.redis, self.keys, sequence, [f"{step}:{counter}"])
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats(sequence, bucket), f"{step}:{counter}", amount)
        pipe.sadd(self.keys.stats_index(bucket), sequence)
        pipe.execute()

    def count_report(
        self,
        sequence: str,
        step: str,
        counter: str,
        lead_id: str,
        note: str,
        once: str = "",
        days: Iterable[str] = (),
    ) -> None:
        """Count a provider's report on a touch and put it on the lead's timeline, in one
        atomic step (``lua/count_report.lua``, in the lead's bucket).

        Args:
            counter: The running total to add to ('' = none: only the day fields).
            once: The lead's engagement field marking this report as counted for this
                touch: the day fields are added only the first time (a second open of
                one email is not a second "opened").
            days: The day fields (:func:`day_fields`); they need a ``lead_id``.
        """
        if not lead_id:
            if counter:
                self.count(sequence, step, counter)
            return
        bucket = self.keys.bucket(lead_id)
        if counter:
            register_fields(self.redis, self.keys, sequence, [f"{step}:{counter}"])
        self._count_report(
            keys=[
                self.keys.stats(sequence, bucket),
                self.keys.stats_index(bucket),
                self.keys.engagement(lead_id),
                self.keys.timeline(lead_id),
            ],
            args=[
                sequence,
                f"{step}:{counter}" if counter else "",
                once,
                note,
                TIMELINE_MAXLEN,
                TIMELINE_TTL_SECONDS,
                *days,
            ],
        )

    def count_global(self, counter: str, amount: float = 1) -> None:
        self.redis.hincrbyfloat(self.keys.counters, counter, amount)

    def set_global(self, counter: str, value: float) -> None:
        self.redis.hset(self.keys.counters, counter, value)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """sequence -> step -> counter -> value, summed over the buckets (the running
        totals only: :func:`counter_totals`)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for seq, values in sorted(counter_totals(self.redis, self.keys).items()):
            for name, value in values.items():
                step, _, counter = name.rpartition(":")
                out.setdefault(seq, {}).setdefault(step, {})[counter] = value
        return out

    def sequence_hashes(self, sequences: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """:func:`summed_stats` of this store's Redis."""
        return summed_stats(self.redis, self.keys, sequences)

    def day_counts(
        self,
        since: str | None = None,
        until: str | None = None,
        sequence: str | None = None,
        by: str | None = None,
    ) -> dict[tuple[str, str, str, str], int]:
        """The report's day fields summed over days ``since <= day < until`` (ISO dates,
        None = open) and over the buckets: (sequence, group, step, column) -> count. The
        group is '' without ``by``, else the value of ``by`` (``(none)`` when unset)."""
        out: dict[tuple[str, str, str, str], int] = {}
        hashes = self.sequence_hashes(None if sequence is None else [sequence])
        for seq, fields in sorted(hashes.items()):
            for name, count in fields.items():
                if not name.startswith(DAY_MARK):
                    continue
                day, step, column, *rest = name[1:].split("|", 3)
                if (since is not None and day < since) or (until is not None and day >= until):
                    continue
                if by is None:
                    if rest:
                        continue
                    group = ""
                else:
                    group_name, _, value = (rest[0] if rest else "").partition("=")
                    if group_name != by:
                        continue
                    group = value or "(none)"
                key = (seq, group, step, column)
                out[key] = out.get(key, 0) + count
        return out

    def global_counters(
        self, stats: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None
    ) -> dict[str, float]:
        """The global counters with every bucket's share added, and the totals of
        :data:`OTHER_TOUCHES` over every sequence and step (from ``stats``, the answer
        of :meth:`stats` when the caller has it, else read): ``sent`` counts the emails
        to leads only, ``notified`` the owners' notify emails, ``posted`` the webhooks."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.counters)
        for bucket in range(self.keys.shards):
            pipe.hgetall(self.keys.bucket_counters(bucket))
        out: dict[str, float] = {}
        for values in cast(list[dict[bytes, Any]], pipe.execute()):
            for name, value in values.items():
                out[name.decode()] = out.get(name.decode(), 0.0) + float(value)
        rows = [
            row
            for steps in (self.stats() if stats is None else stats).values()
            for row in steps.items()
        ]
        out.setdefault("sent", 0.0)  # shown beside its two siblings, 0 before any email
        for counter in OTHER_TOUCHES:
            # Variant rows (step@variant) repeat their step's counts: not added twice.
            out[counter] = float(sum(v.get(counter, 0) for row, v in rows if "@" not in row))
        return out
