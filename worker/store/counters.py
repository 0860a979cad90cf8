"""Counters: per sequence and step (sent, failed, delivered, open...) and global ones.

Every counter hash is split into the lead buckets (``Keys.stats(seq, n)``,
``Keys.bucket_counters(n)``): a touch's counts are written in its lead's bucket, in the
slot of the script that writes them; other counts go to a bucket of their own name's.
Readers sum the buckets (one pipelined command per bucket).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import redis

from worker.store.keys import Keys, crc_bucket
from worker.store.timeline import add_to

#: Global counter: how late the oldest touch of the scheduler's last claim was.
SCHEDULER_LAG = "scheduler_lag_last"


class Counters:
    """Counts kept in Redis hashes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def count(
        self,
        sequence: str,
        step: str,
        counter: str,
        amount: int = 1,
    ) -> None:
        """Add to a per-sequence, per-step counter."""
        bucket = crc_bucket(f"{sequence}:{step}:{counter}", self.keys.shards)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats(sequence, bucket), f"{step}:{counter}", amount)
        pipe.sadd(self.keys.stats_index(bucket), sequence)
        pipe.execute()

    def count_report(self, sequence: str, step: str, counter: str, lead_id: str, note: str) -> None:
        """Count a provider's report on a touch (delivered, open, click...) and put it on
        the lead's timeline, in one round trip."""
        bucket = self.keys.bucket(lead_id) if lead_id else crc_bucket(sequence, self.keys.shards)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats(sequence, bucket), f"{step}:{counter}", 1)
        pipe.sadd(self.keys.stats_index(bucket), sequence)
        if lead_id:
            add_to(pipe, self.keys, lead_id, [note])
        pipe.execute()

    def count_global(self, counter: str, amount: float = 1) -> None:
        self.redis.hincrbyfloat(self.keys.counters, counter, amount)

    def set_global(self, counter: str, value: float) -> None:
        self.redis.hset(self.keys.counters, counter, value)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """sequence -> step -> counter -> value, summed over the buckets."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for seq, values in sorted(self.sequence_hashes().items()):
            for name, value in values.items():
                step, _, counter = name.rpartition(":")
                out.setdefault(seq, {}).setdefault(step, {})[counter] = value
        return out

    def sequence_hashes(self, sequences: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Sequence id -> its stats hash (field -> value) summed over the buckets; every
        sequence with stats unless ``sequences`` names them. Two pipelined reads."""
        buckets = range(self.keys.shards)
        named = sequences is not None
        if sequences is None:
            pipe = self.redis.pipeline(transaction=False)
            for bucket in buckets:
                pipe.smembers(self.keys.stats_index(bucket))
            found = cast(list[set[bytes]], pipe.execute())
            sequences = sorted({raw.decode() for members in found for raw in members})
        names = list(sequences)
        pipe = self.redis.pipeline(transaction=False)
        for seq in names:
            for bucket in buckets:
                pipe.hgetall(self.keys.stats(seq, bucket))
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

    def global_counters(self) -> dict[str, float]:
        """The global counters with every bucket's share added."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.counters)
        for bucket in range(self.keys.shards):
            pipe.hgetall(self.keys.bucket_counters(bucket))
        out: dict[str, float] = {}
        for values in cast(list[dict[bytes, Any]], pipe.execute()):
            for name, value in values.items():
                out[name.decode()] = out.get(name.decode(), 0.0) + float(value)
        return out
