"""Goal conversions: which touch a conversion is put down to, and the counters.

A conversion counts for the sequence (``_goal:converted``, ``_goal:<event type>``) and
for the last touch sent in the enrollment (``<step>:converted``), and for that touch's
A/B variant when it had one (``<step>@<variant>:converted``), all in the sequence's
stats hash (:meth:`~worker.store.keys.Keys.stats`), read by ``Counters.stats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis

from worker.enrollment import ledger_field
from worker.store.counters import counter_totals, register_fields
from worker.store.keys import LEDGER_FIELD, Keys, crc_bucket

#: The stats "step" under which sequence-level conversions are counted (never a step
#: id: step ids cannot start with ``_``).
GOAL_ROW = "_goal"


@dataclass(frozen=True)
class LastTouch:
    """The touch a conversion is attributed to."""

    step: str
    variant: str | None


class ConversionStore:
    """Reads the last sent touch of an enrollment and counts conversions."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def last_touch(
        self, lead_id: str, sequence: str, generation: int, steps: Sequence[str]
    ) -> LastTouch | None:
        """The last of ``steps`` (passed steps, in order) whose email was sent, with its
        variant; None when nothing was sent in this enrollment."""
        if not steps:
            return None
        fields = [ledger_field(sequence, generation, step) for step in steps]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.lead(lead_id), [LEDGER_FIELD + name for name in fields])
        pipe.hmget(self.keys.variants(lead_id), fields)
        states, variants = cast(tuple[list[bytes | None], list[bytes | None]], pipe.execute())
        for step, state, variant in reversed(list(zip(steps, states, variants, strict=True))):
            if state is not None and state.startswith(b"sent:"):
                return LastTouch(step, variant.decode() if variant else None)
        return None

    def record_variant(
        self, lead_id: str, sequence: str, generation: int, step: str, variant: str
    ) -> None:
        """A touch went out as ``variant``: remember it for the lead and count it sent
        (in the lead's bucket: one slot, one transaction)."""
        bucket = self.keys.bucket(lead_id)
        register_fields(self.redis, self.keys, sequence, [f"{step}@{variant}:sent"])
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.variants(lead_id), ledger_field(sequence, generation, step), variant)
        pipe.hincrby(self.keys.stats(sequence, bucket), f"{step}@{variant}:sent", 1)
        pipe.sadd(self.keys.stats_index(bucket), sequence)
        pipe.execute()

    def sequence_stats(self, sequence: str) -> dict[str, dict[str, int]]:
        """One sequence's stats: row (step or ``step@variant``) -> counter -> value."""
        summed = counter_totals(self.redis, self.keys, [sequence])[sequence]
        out: dict[str, dict[str, int]] = {}
        for name, value in summed.items():
            row, _, counter = name.rpartition(":")
            out.setdefault(row, {})[counter] = value
        return out

    def count(self, sequence: str, goal: str, touch: LastTouch | None) -> None:
        """Count one conversion of ``sequence`` (reaching ``goal``)."""
        bucket = crc_bucket(f"{sequence}:{goal}", self.keys.shards)
        stats = self.keys.stats(sequence, bucket)
        fields = [f"{GOAL_ROW}:converted", f"{GOAL_ROW}:{goal}"]
        if touch is not None:
            fields.append(f"{touch.step}:converted")
            if touch.variant:
                fields.append(f"{touch.step}@{touch.variant}:converted")
        register_fields(self.redis, self.keys, sequence, fields)
        pipe = self.redis.pipeline(transaction=True)
        for name in fields:
            pipe.hincrby(stats, name, 1)
        pipe.sadd(self.keys.stats_index(bucket), sequence)
        pipe.execute()
