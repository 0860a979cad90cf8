"""An idle scheduler tick does not count overdue touches over every shard; the ticks
that can meet touches overdue past the catch-up threshold still spread them
(worker/scheduler.py, ``Scheduler.catch_up_due``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import redis

from worker.clock import ManualClock
from worker.enrollment import touch_id
from worker.scheduler import CATCHUP_CHECK_EVERY, Scheduler, SchedulerSettings
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


def commands_per_tick(client: redis.Redis, scheduler: Scheduler, ticks: int, force: bool) -> float:
    """Commands Redis ran per tick (INFO's own calls taken out); ``force`` looks for a
    catch-up at every tick, as every tick did before ``catch_up_due``."""
    before = command_counts(client)
    for _ in range(ticks):
        scheduler._look_again = force
        scheduler.tick()
    after = command_counts(client)
    total = sum(after.values()) - sum(before.values())
    return (total - (after.get("info", 0) - before.get("info", 0))) / ticks


def test_an_idle_tick_does_not_count_the_overdue_touches(redis_url: str) -> None:
    scheduler, _ = make(redis_url)
    client = scheduler.store.redis
    scheduler.tick()  # the first tick looks
    before = commands_per_tick(client, scheduler, 20, force=True)
    zcounts = command_counts(client).get("zcount", 0)
    after = commands_per_tick(client, scheduler, 20, force=False)
    assert command_counts(client).get("zcount", 0) == zcounts  # no catch-up count
    shards = scheduler.store.keys.shards
    print(f"\nRedis commands per idle tick, one scheduler: before {before}, after {after}")
    assert abs(before - after - shards) < 0.01, (before, after)
    # The look still comes round every CATCHUP_CHECK_EVERY seconds.
    scheduler.clock.advance(timedelta(seconds=CATCHUP_CHECK_EVERY))  # type: ignore[attr-defined]
    scheduler.tick()
    assert command_counts(client)["zcount"] == zcounts + shards


def schedule(scheduler: Scheduler, leads: int, due: float) -> list[str]:
    members = [touch_id("value-first", 1, "outcome-story", f"lead-{n:02d}") for n in range(leads)]
    for offset, member in enumerate(members):
        scheduler.store.schedule.reschedule(member, due + offset)
    return members


def test_downtime_since_the_last_claim_is_spread_by_the_next_tick(redis_url: str) -> None:
    scheduler, queued = make(redis_url)
    clock: ManualClock = scheduler.clock  # type: ignore[assignment]
    scheduler.tick()
    scheduler.tick()  # idle from here on: no look
    start = clock.now().timestamp()
    schedule(scheduler, 30, start + 60)
    # The process stood still (or the host slept) for two hours.
    clock.advance(timedelta(hours=2))
    assert scheduler.catch_up_due(clock.now().timestamp())
    scheduler.tick()
    now = clock.now().timestamp()
    # Spread over the next 600 s in their order: one (the first slot) is due now.
    assert len(queued) == 1
    times = [due for _, due in scheduler.store.schedule.entries()]
    assert len(times) == 29 and min(times) > now and max(times) < now + 600
    assert scheduler.store.global_counters()["caught_up"] == 30


def test_touches_left_behind_by_a_full_claim_are_looked_at_next_tick(redis_url: str) -> None:
    scheduler, queued = make(redis_url, replace(SETTINGS, batch=1))
    clock: ManualClock = scheduler.clock  # type: ignore[assignment]
    scheduler.tick()
    scheduler.tick()
    assert not scheduler.catch_up_due(clock.now().timestamp())
    # Touches of one lead (one shard) due two hours ago appear without any gap in the
    # ticks (a restore, a shard another scheduler had): the claim takes one and
    # leaves the others; the next tick spreads those.
    now = clock.now().timestamp()
    for n in range(3):
        member = touch_id("value-first", 1, f"step-{n}", "lead-1")
        scheduler.store.schedule.reschedule(member, now - 7200 + n)
    scheduler.tick()
    assert len(queued) == 1 and scheduler.backlog
    assert scheduler.catch_up_due(clock.now().timestamp())
    scheduler.tick()
    assert scheduler.store.global_counters()["caught_up"] == 2
    # The first of the spread is due at once, the other 300 s later.
    assert len(queued) == 2
    assert [due for _, due in scheduler.store.schedule.entries()] == [now + 300]
