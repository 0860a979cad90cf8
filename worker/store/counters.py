"""Counters: per sequence and step (sent, failed, delivered, open...) and global ones.

Each sequence's stats hash (:meth:`Keys.stats`) holds two kinds of fields:

- ``<step>:<counter>``: running totals for ``nurture status`` and ``/metrics``;
- **day fields** for ``nurture report``: ``@<YYYY-MM-DD>|<step>|<column>`` (a UTC day,
  a funnel column such as ``sent`` or ``opened``) and the same with ``|<group>=<value>``
  appended, one per group (``locale``, ``source`` always, empty when unset; ``variant``
  when the touch had one). Each is written in the same atomic step as the fact it
  counts (the enrollment's transaction, the ``advance`` script, the webhook's
  ``count_report`` script), so the report's numbers stay exact.

Day fields are read only through :meth:`Counters.day_counts`: the one place that will
sum them over the hashes' buckets when the stats are sharded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import cast

import redis
from redis.commands.core import Script

from worker.store.keys import Keys
from worker.store.timeline import TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS

#: Global counter: how late the oldest touch of the scheduler's last claim was.
SCHEDULER_LAG = "scheduler_lag_last"
#: First character of the day fields in the stats hashes.
DAY_MARK = "@"
#: Groups every day fact is also counted under (``nurture report --by``).
GROUPS = ("locale", "source")


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
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats(sequence), f"{step}:{counter}", amount)
        pipe.sadd(self.keys.stats_index, sequence)
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
        atomic step (``lua/count_report.lua``).

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
        self._count_report(
            keys=[
                self.keys.stats(sequence),
                self.keys.stats_index,
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
        """sequence -> step -> counter -> value."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        sequences = cast(set[bytes], self.redis.smembers(self.keys.stats_index))
        for raw_seq in sorted(sequences):
            seq = raw_seq.decode()
            values = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.stats(seq)))
            for name, value in values.items():
                if name.startswith(DAY_MARK.encode()):
                    continue  # the report's day fields (day_counts)
                step, _, counter = name.decode().rpartition(":")
                out.setdefault(seq, {}).setdefault(step, {})[counter] = int(value)
        return out

    def day_counts(
        self,
        since: str | None = None,
        until: str | None = None,
        sequence: str | None = None,
        by: str | None = None,
    ) -> dict[tuple[str, str, str, str], int]:
        """The report's day fields summed over days ``since <= day < until`` (ISO dates,
        None = open): (sequence, group, step, column) -> count. The group is '' without
        ``by``, else the value of ``by`` (``(none)`` when unset)."""
        out: dict[tuple[str, str, str, str], int] = {}
        names = cast(set[bytes], self.redis.smembers(self.keys.stats_index))
        for raw_seq in sorted(names):
            seq = raw_seq.decode()
            if sequence is not None and seq != sequence:
                continue
            fields = self.redis.hscan_iter(self.keys.stats(seq), match=DAY_MARK + "*", count=5000)
            for raw_name, raw_value in cast(Iterable[tuple[bytes, bytes]], fields):
                day, step, column, *rest = raw_name.decode()[1:].split("|", 3)
                if (since is not None and day < since) or (until is not None and day >= until):
                    continue
                if by is None:
                    if rest:
                        continue
                    group = ""
                else:
                    name, _, value = (rest[0] if rest else "").partition("=")
                    if name != by:
                        continue
                    group = value or "(none)"
                key = (seq, group, step, column)
                out[key] = out.get(key, 0) + int(raw_value)
        return out

    def global_counters(self) -> dict[str, float]:
        values = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.counters))
        return {k.decode(): float(v) for k, v in values.items()}
