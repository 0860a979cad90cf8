"""Benchmarks 3 and 4: the scheduler with many pending touches, at several sizes.

For one level of N pending touches (each belonging to an enrolled lead):

* **schedule only**: N touch ids ZADDed to a fresh zset, one ZADD per touch,
  pipelined in batches of 10,000 (what enrollment writes to the schedule): seconds,
  and ``used_memory`` growth / N = bytes per pending touch.
* **all state**: N leads written as enrollment leaves them (lead hash, email index,
  replay guard, enrollment, schedule entry; see ``benchmarks/state.py``), due
  1-30 days ahead: seconds, and bytes per enrolled lead.
* **worker memory**: ``nurture worker`` processes (sendgrid delivery to the stand-in)
  run next to the N pending touches; their RSS is read once they idle, and again after
  the bursts below.
* **lateness**: B more leads whose first touch falls due within one window (default
  10,000 in the same minute, uniformly spread), then B all due at the same instant
  (what a send window opening at 09:00 does). Lateness of each touch = the stand-in's
  receive time minus the touch's due time; p50, p99, max. The instant burst's drain
  rate is the pipeline's throughput at this level.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis

from benchmarks.common import Bench, CpuWindow, Proc, percentile, wait_until
from benchmarks.state import KEYS, schedule_only, write_leads
from worker.store import Store

SCHEDULE_ONLY_KEY = f"{KEYS.prefix}:sched:bench-only"


def future_due(index: int) -> float:
    """Spread over 1-30 days ahead, so nothing of the background falls due."""
    return time.time() + 86400 * (1 + index % 29) + index % 86400


def rewrite_aof(bench: Bench, timeout: float = 600) -> None:
    """Compact the AOF now and wait for it, so no rewrite fork runs in a timed window."""
    client = bench.redis
    try:
        with contextlib.suppress(redis.ResponseError):  # one is running already: wait
            client.bgrewriteaof()
        wait_until(
            lambda: (
                not int(client.info("persistence")["aof_rewrite_in_progress"])
                and not int(client.info("persistence")["aof_rewrite_scheduled"])
            ),
            timeout,
            "the AOF rewrite",
            interval=0.2,
        )
    finally:
        client.close()


def schedule_memory(bench: Bench, pending: int) -> dict[str, float]:
    """Seconds to ZADD ``pending`` touches (pipelined) and bytes per touch."""
    client = bench.redis
    try:
        client.delete(SCHEDULE_ONLY_KEY)
        before = bench.used_memory()
        started = time.perf_counter()
        schedule_only(client, SCHEDULE_ONLY_KEY, "bg", pending, future_due, batch=10_000)
        seconds = time.perf_counter() - started
        grown = bench.used_memory() - before
        if int(client.zcard(SCHEDULE_ONLY_KEY)) != pending:
            raise RuntimeError("the schedule-only zset lost entries")
        client.delete(SCHEDULE_ONLY_KEY)
    finally:
        client.close()
    return {
        "schedule_seconds": seconds,
        "touches_per_s": pending / seconds,
        "schedule_bytes": grown / pending,
    }


def burst(bench: Bench, workers: list[Proc], tag: str, count: int, window: float) -> dict[str, Any]:
    """``count`` touches due within ``window`` seconds (0: all at one instant)."""
    bench.standin.reset()
    base = time.time() + 0.5 + count / 5_000  # lead-in: time to write the burst
    dues = [base + window * i / count for i in range(count)]
    write_leads(bench.redis_url, tag, range(count), lambda i: dues[i])
    if time.time() > base:
        raise RuntimeError("writing the burst took longer than its lead-in")
    with CpuWindow(bench, workers) as window_cpu:
        wait_until(
            lambda: bench.standin.accepted() >= count,
            window + 120 + count / 20,
            f"the stand-in to accept {count} burst messages",
            interval=0.1,
        )
    cpu = window_cpu.result()
    messages = bench.standin.messages()
    lateness: list[float] = []
    seen: set[str] = set()
    duplicates = 0
    last = 0.0
    for message in messages:
        args = message["payload"].get("custom_args") or {}
        lead = str(args.get("lead_id", ""))
        if not lead.startswith(f"{tag}-"):
            continue
        if lead in seen:
            duplicates += 1
            continue
        seen.add(lead)
        received = float(message["received_at"])
        last = max(last, received)
        lateness.append(received - dues[int(lead.rsplit("-", 1)[1])])
    bench.standin.reset()
    result: dict[str, Any] = {
        "touches": count,
        "window_s": window,
        "received": len(lateness),
        "duplicates": duplicates,
        "p50_s": percentile(lateness, 50),
        "p99_s": percentile(lateness, 99),
        "max_s": max(lateness) if lateness else float("nan"),
        "early": sum(1 for late in lateness if late < -0.001),
        "worker_cpu_ms": cpu["procs_cpu"] / count * 1000,
        "machine_busy_cores": cpu["machine_busy_cores"],
        "foreign_cores": cpu["foreign_cores"],
    }
    if window == 0:
        result["drain_touches_per_s"] = count / max(1e-9, last - base)
    return result


def scale_level(
    bench: Bench,
    pending: int,
    burst_size: int,
    burst_window: float,
    repeats: int = 1,
    settle: float = 5.0,
) -> dict[str, Any]:
    """Every scale figure at one level of pending touches; the schedule timing and
    the bursts are repeated ``repeats`` times (median taken by the caller)."""
    bench.flush()
    rewrite_aof(bench)
    schedule = [schedule_memory(bench, pending) for _ in range(repeats)]
    before = bench.used_memory()
    started = time.perf_counter()
    write_leads(bench.redis_url, "bg", range(pending), future_due)
    state_seconds = time.perf_counter() - started
    state_bytes = (bench.used_memory() - before) / pending
    total_memory = bench.used_memory()
    rewrite_aof(bench)
    bench.standin.reset()
    workers = bench.start_workers()
    try:
        time.sleep(settle)
        rss_idle = [w.rss() for w in workers]
        spread = []
        instant = []
        for run in range(repeats):
            spread.append(burst(bench, workers, f"spread{run}", burst_size, burst_window))
            instant.append(burst(bench, workers, f"instant{run}", burst_size, 0.0))
        rss_after = [w.rss() for w in workers]
        client = bench.redis
        scheduled = Store(client, KEYS.prefix).schedule.stats().scheduled
        client.close()
    finally:
        bench.stop(workers)
    return {
        "pending": pending,
        "schedule": schedule,
        "state_seconds": state_seconds,
        "state_bytes": state_bytes,
        "used_memory": total_memory,
        "rss_idle": max(rss_idle),
        "rss_after": max(rss_after),
        "spread": spread,
        "instant": instant,
        "scheduled_after": scheduled,
    }
