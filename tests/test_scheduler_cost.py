"""An idle scheduler tick does not count overdue touches over every shard; a claim that
meets touches overdue past the catch-up threshold leaves them on the schedule and the
catch-up spreads them (worker/scheduler.py, ``Scheduler.tick``; lua/claim_due.lua)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis

from worker.clock import ManualClock
from worker.enrollment import touch_id
from worker.scheduler import SWEEP_EVERY, Scheduler, SchedulerSettings
from worker.store import Store

SETTINGS = SchedulerSettings(
    batch=1000,
    claim_lease=60.0,
    interval=0.2,
    catchup_after=3600.0,
    catchup_spread=600.0,
    touches_per_message=10,
)


def make(redis_url: str, settings: SchedulerSettings = SETTINGS) -> tuple[Scheduler, list[Any]]:
    queued: list[Any] = []
    store = Store(redis.Redis.from_url(redis_url))
    scheduler = Scheduler(store, ManualClock(), queued.extend, settings)
    return scheduler, queued


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Redis's own count of the commands run so far, per command (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def commands_per_tick(client: redis.Redis, scheduler: Scheduler, ticks: int) -> float:
    """Commands Redis ran per tick (INFO's own calls taken out)."""
    before = command_counts(client)
    for _ in range(ticks):
        scheduler.tick()
    after = command_counts(client)
    total = sum(after.values()) - sum(before.values())
    return (total - (after.get("info", 0) - before.get("info", 0))) / ticks


def test_an_idle_tick_does_not_count_the_overdue_touches(redis_url: str) -> None:
    scheduler, _ = make(redis_url)
    client = scheduler.store.redis
    clock: ManualClock = scheduler.clock  # type: ignore[assignment]
    scheduler.tick()
    zcounts = command_counts(client).get("zcount", 0)  # the session Redis's, so far
    idle = commands_per_tick(client, scheduler, 20)
    # Not after a gap in the claims either (the host slept): nothing is overdue.
    clock.advance(timedelta(hours=2))
    idle_after_gap = commands_per_tick(client, scheduler, 20)
    assert command_counts(client).get("zcount", 0) == zcounts  # no catch-up count
    shards = scheduler.store.keys.shards
    print(f"\nRedis commands per idle tick, one scheduler: {idle}, {idle_after_gap}")
    # Per shard its claim script and the two ZRANGEBYSCORE inside it; then the pause
    # flag, the live schedulers (not on the sweep, every 10th tick) and the heartbeat:
    # 772 (1,028 when every tick counted the overdue touches over all shards).
    for per_tick in (idle, idle_after_gap):
        assert abs(per_tick - (3 * shards + 4 - 1 / SWEEP_EVERY)) < 0.01, per_tick


def schedule(scheduler: Scheduler, leads: int, due: float) -> list[str]:
    members = [touch_id("value-first", 1, "outcome-story", f"lead-{n:02d}") for n in range(leads)]
    for offset, member in enumerate(members):
        scheduler.store.schedule.reschedule(member, due + offset)
    return members


def test_downtime_since_the_last_claim_is_spread_by_the_next_tick(redis_url: str) -> None:
    scheduler, queued = make(redis_url)
    clock: ManualClock = scheduler.clock  # type: ignore[assignment]
    scheduler.tick()
    scheduler.tick()
    start = clock.now().timestamp()
    schedule(scheduler, 30, start + 60)
    # The process stood still (or the host slept) for two hours: the claim meets the
    # overdue touches, leaves them, and the catch-up spreads them over the next 600 s
    # in their order; the first slot is due at once and goes with the next tick.
    clock.advance(timedelta(hours=2))
    assert scheduler.tick() == 0
    now = clock.now().timestamp()
    times = [due for _, due in scheduler.store.schedule.entries()]
    assert len(times) == 30 and min(times) == now and max(times) < now + 600
    assert scheduler.store.global_counters()["caught_up"] == 30
    assert scheduler.tick() == 1 and len(queued) == 1


def test_overdue_touches_appearing_between_ticks_are_spread_not_queued(
    redis_url: str,
) -> None:
    scheduler, queued = make(redis_url, replace(SETTINGS, batch=1))
    clock: ManualClock = scheduler.clock  # type: ignore[assignment]
    scheduler.tick()
    scheduler.tick()
    # Touches of one lead (one shard) due two hours ago appear without any gap in the
    # ticks (an event backfilled with an old occurred_at, a restore): the claim, full
    # with the first of them, queues none; the catch-up spreads all three.
    now = clock.now().timestamp()
    for n in range(3):
        member = touch_id("value-first", 1, f"step-{n}", "lead-1")
        scheduler.store.schedule.reschedule(member, now - 7200 + n)
    assert scheduler.tick() == 0 and queued == []
    assert scheduler.store.global_counters()["caught_up"] == 3
    assert [due for _, due in scheduler.store.schedule.entries()] == [now, now + 200, now + 400]
    assert scheduler.tick() == 1


def test_a_catch_up_that_fails_runs_again_at_the_next_tick(redis_url: str) -> None:
    """A real Redis error in the catch-up (its ZCOUNT refused by an ACL, after the claim
    worked): the overdue touches stay on the schedule, unqueued, and the next tick's
    claim meets them again and spreads them."""
    scheduler, queued = make(redis_url)
    admin = scheduler.store.redis
    user = f"nozcount-{scheduler.id}"
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-zcount"],
    )
    limited = redis.Redis.from_url(redis_url, username=user, password="pw")
    scheduler.store = Store(limited)
    try:
        scheduler.tick()
        now = scheduler.clock.now().timestamp()
        members = schedule(scheduler, 3, now - 7200)
        with pytest.raises(redis.exceptions.NoPermissionError):
            scheduler.tick()
        assert queued == [] and [m for m, _ in scheduler.store.schedule.entries()] == members
        admin.acl_setuser(user, commands=["+zcount"])
        assert scheduler.tick() == 0
        assert scheduler.store.global_counters()["caught_up"] == 3
        assert scheduler.tick() == 1
    finally:
        limited.close()
        admin.acl_deluser(user)
