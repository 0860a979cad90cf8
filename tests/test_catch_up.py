"""Touches written already overdue are spread by the catch-up, not sent at once: the
events queued while the workers were down (intake never stops) or backfilled with an
old ``occurred_at`` make first touches due days ago, after the restarted scheduler's
first tick; the claim leaves those overdue past ``NURTURE_CATCHUP_AFTER`` on the
schedule and the catch-up spreads them over ``NURTURE_CATCHUP_SPREAD``
(``lua/claim_due.lua``, ``Scheduler.tick``). Real Redis, real dramatiq workers."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.harness import Harness, event, running
from tests.test_pipeline import INBOUND

SPREAD = 600.0
STEP = 30.0


def _emit(h: Harness, first: int, count: int, occurred_at: str) -> None:
    h.emit(
        *(
            event(
                f"e{n}",
                lead_id=f"lead-{n:03d}",
                email=f"l{n}@example.com",
                occurred_at=occurred_at,
                **INBOUND,
            )
            for n in range(first, first + count)
        )
    )


def _sends_per_step(h: Harness, steps: int) -> list[int]:
    """New emails in each :data:`STEP` seconds of the test's clock."""
    counts = []
    for _ in range(steps):
        before = len(h.sent())
        h.advance(timedelta(seconds=STEP))
        counts.append(len(h.sent()) - before)
    return counts


def _looks(caplog: pytest.LogCaptureFixture) -> int:
    """Catch-ups run so far (one per tick whose claim met overdue touches)."""
    return sum(r.getMessage().startswith("catch-up:") for r in caplog.records)


def test_events_queued_during_downtime_are_sent_spread_not_at_once(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.scheduler")
    h = make_harness(catchup_after=3600.0, catchup_spread=SPREAD)
    # Workers down: the intake queues 40 events of last Friday (first touch due then,
    # 10 minutes after each, three days overdue on Monday 09:00 UTC).
    _emit(h, 0, 40, "2026-11-20T08:00:00Z")
    with running(h):
        h.settle()  # the restarted scheduler's first tick, the events, the next ticks
        first, looks = len(h.sent()), _looks(caplog)
        steps = _sends_per_step(h, 10)
        # Intake never stops: 20 more such events arrive halfway through the spread.
        _emit(h, 40, 20, "2026-11-20T08:30:00Z")
        h.settle()
        steps.append(len(h.sent()) - first - sum(steps))
        steps += _sends_per_step(h, int(SPREAD / STEP) + 2)
    print(f"\nsent at once: {first} ({looks} looks); per {STEP:.0f} s: {steps}")
    # Before the fix: 17 at once, then the 20 at once. Now each look (a tick whose
    # claim met some: events are applied while the scheduler ticks) spreads what it
    # found over the next 600 s, its first slot due at once.
    assert 1 <= first <= looks
    # 40 over 600 s is 2 per 30 s, the 20 add 1: at most one more per look (the
    # slots of each look start at its own time).
    assert max(steps) <= 3 + _looks(caplog), steps
    assert first + sum(steps[:10]) <= 20 + looks  # half the spread: half the 40
    sent = Counter(h.sent())
    assert len(sent) == 60 and set(sent.values()) == {1}  # each touch once
    assert {step for _, _, step in sent} == {"outcome-story"}
    assert h.rt.store.global_counters()["caught_up"] == 60
