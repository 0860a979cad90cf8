"""`nurture status` and `/metrics` read the running totals by name (the field index of
worker/store/counters.py), so a year of `nurture report` day fields beside them costs
them nothing; the numbers are the ones the whole hashes give."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis

from worker.store import Store
from worker.store.counters import (
    DAY_MARK,
    INDEX_COMPLETE,
    day_fields,
    summed_stats,
)

SEQUENCES = [f"seq-{n}" for n in range(5)]
STEPS = [f"step-{n}" for n in range(5)]
COUNTERS = ("sent", "failed", "delivered", "open", "click")
GROUPS = {"locale": "de", "source": "web"}
#: Buckets the day fields are written in (a year of them in all 256 would take minutes
#: to write here; the readers' cost per bucket is what grows).
DAY_BUCKETS = 8


def stats_as_before(store: Store) -> dict[str, dict[str, dict[str, int]]]:
    """What ``Counters.stats()`` answered before the field index: every whole hash
    (HGETALL over the buckets), the day fields left out."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for seq, values in sorted(summed_stats(store.redis, store.keys).items()):
        for name, value in values.items():
            if not name.startswith(DAY_MARK):
                step, _, counter = name.rpartition(":")
                out.setdefault(seq, {}).setdefault(step, {})[counter] = value
    return out


def write_totals(store: Store) -> None:
    """Running totals through the writers the worker uses (each names its field)."""
    for i, seq in enumerate(SEQUENCES):
        for j, step in enumerate(STEPS):
            for k, counter in enumerate(COUNTERS):
                store.count(seq, step, counter, amount=1 + i + j + k)
        store.conversions.record_variant("lead-1", seq, 1, STEPS[0], "a")


def write_year_of_days(client: redis.Redis, store: Store) -> int:
    """365 days x 5 steps x (sent, opened) x (total + 2 groups) per sequence and bucket,
    as the advance and count_report scripts write them. Returns the fields written."""
    start = datetime(2025, 12, 1, 12, tzinfo=UTC)
    fields: dict[str, int] = {}
    for day in range(365):
        at = (start + timedelta(days=day)).timestamp()
        for step in STEPS:
            for column in ("sent", "opened"):
                fields.update(dict.fromkeys(day_fields(at, step, column, GROUPS), 3))
    for seq in SEQUENCES:
        for bucket in range(DAY_BUCKETS):
            client.hset(store.keys.stats(seq, bucket), mapping=fields)  # type: ignore[arg-type]
    return len(fields) * len(SEQUENCES) * DAY_BUCKETS


def output_bytes(client: redis.Redis, read: Callable[[], object]) -> int:
    """Bytes Redis sent for ``read()`` (INFO's total_net_output_bytes; the INFO reply's
    own share measured by a read that does nothing)."""

    def delta(call: Callable[[], object]) -> int:
        before = int(client.info("stats")["total_net_output_bytes"])
        call()
        return int(client.info("stats")["total_net_output_bytes"]) - before

    return delta(read) - delta(lambda: None)


def median_seconds(read: Callable[[], object], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        read()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@pytest.mark.slow  # 438,000 day fields and the old full read timed: ~25 s on a busy machine
def test_status_reads_the_same_totals_and_no_day_fields(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = Store(client)
    write_totals(store)
    expected = stats_as_before(store)
    assert store.stats() == expected
    assert expected["seq-4"]["step-4"]["click"] == 1 + 4 + 4 + 4
    assert expected["seq-0"]["step-0@a"] == {"sent": 1}
    lean = output_bytes(client, store.stats)

    written = write_year_of_days(client, store)
    assert written > 400_000
    assert store.stats() == stats_as_before(store) == expected
    # The same bytes as without the day fields (give or take INFO's own digits).
    assert abs(output_bytes(client, store.stats) - lean) < 100
    before = output_bytes(client, lambda: stats_as_before(store))
    assert before > 100 * lean, (before, lean)

    old, new = median_seconds(lambda: stats_as_before(store)), median_seconds(store.stats)
    print(
        f"\nstatus/metrics stats read, {written} day fields ({DAY_BUCKETS} buckets): "
        f"before {old * 1000:.1f} ms ({before} bytes), after {new * 1000:.1f} ms "
        f"({lean} bytes), medians of 7"
    )
    # The report still sees every day field.
    report = store.counters.day_counts(since="2025-12-01", until="2026-12-01")
    assert report[("seq-0", "", "step-0", "sent")] == 365 * 3 * DAY_BUCKETS


def test_an_index_lost_or_never_built_is_rebuilt_from_the_hashes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = Store(client)
    write_totals(store)
    # State written before the index existed: totals in the hashes, no index at all.
    client.delete(*(store.keys.stats_fields(seq) for seq in SEQUENCES))
    client.hincrby(store.keys.stats("seq-0", 200), "legacy-step:sent", 7)
    expected = stats_as_before(store)
    assert expected["seq-0"]["legacy-step"] == {"sent": 7}
    assert store.stats() == expected
    assert client.sismember(store.keys.stats_fields("seq-0"), INDEX_COMPLETE)
    # A field first written after the rebuild is named by its writer: still counted.
    store.count("seq-0", "new-step", "sent")
    assert store.stats()["seq-0"]["new-step"] == {"sent": 1}
    assert store.stats() == stats_as_before(store)
