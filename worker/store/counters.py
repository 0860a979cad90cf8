"""Counters: per sequence and step (sent, failed, delivered, open...) and global ones."""

from __future__ import annotations

from typing import cast

import redis

from worker.store.keys import Keys
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
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats(sequence), f"{step}:{counter}", amount)
        pipe.sadd(self.keys.stats_index, sequence)
        pipe.execute()

    def count_report(self, sequence: str, step: str, counter: str, lead_id: str, note: str) -> None:
        """Count a provider's report on a touch (delivered, open, click...) and put it on
        the lead's timeline, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats(sequence), f"{step}:{counter}", 1)
        pipe.sadd(self.keys.stats_index, sequence)
        if lead_id:
            add_to(pipe, self.keys, lead_id, [note])
        pipe.execute()

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
                step, _, counter = name.decode().rpartition(":")
                out.setdefault(seq, {}).setdefault(step, {})[counter] = int(value)
        return out

    def global_counters(self) -> dict[str, float]:
        values = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.counters))
        return {k.decode(): float(v) for k, v in values.items()}
