"""Live edits while leads are in flight, keyed on step ids, and catch-up after downtime."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.harness import Harness, event, running
from tests.test_pipeline import INBOUND, steps_sent
from worker.enrollment import touch_id

#: Messages run inline on dramatiq's StubBroker (see tests/harness.py): no worker threads.
INLINE_QUEUE = True
#: Its tests edit their catalog copy: each harness loads its own.
EDITS_CATALOG = True


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def value_first(catalog_dirs: dict[str, Path]) -> Path:
    return catalog_dirs["sequences"] / "value-first.yaml"


def test_invalid_edit_is_refused_and_the_last_good_version_keeps_running(
    make_harness: Callable[..., Harness], value_first: Path, caplog: pytest.LogCaptureFixture
) -> None:

    h = make_harness()
    version = h.rt.catalog.current.catalog.version
    edit(value_first, "wait: 3 business days", "wait: three business days")
    with caplog.at_level(logging.ERROR):
        assert h.rt.catalog.reload_if_changed() is False
    assert h.rt.catalog.current.catalog.version == version
    assert "value-first.yaml" in caplog.text and "wait" in caplog.text
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == ["outcome-story", "case-study", "testimonial", "how-to-guide"]


def test_removed_step_is_skipped(make_harness: Callable[..., Harness], value_first: Path) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.advance(timedelta(minutes=10))
        assert steps_sent(h) == ["outcome-story"]  # case-study is now pending
        edit(
            value_first,
            "  - id: case-study\n    wait: 3 business days\n    template: value/case_study\n",
            "",
        )
        assert h.rt.catalog.reload_if_changed() is True
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == ["outcome-story", "testimonial", "how-to-guide"]


def test_changed_wait_applies_to_touches_not_yet_scheduled(
    make_harness: Callable[..., Harness], value_first: Path
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.advance(timedelta(minutes=10))
        [(member, due_before)] = h.rt.store.scheduled_for("lead-1")
        edit(value_first, "wait: 3 business days", "wait: 1 business day")
        edit(value_first, "wait: 4 business days", "wait: 2h")
        assert h.rt.catalog.reload_if_changed() is True
        # The pending case-study keeps the time it was given...
        assert h.rt.store.scheduled_for("lead-1") == [(member, due_before)]
        h.run_until(due_before)
        assert steps_sent(h)[-1] == "case-study"
        # ...the testimonial, scheduled after the edit, uses the new wait.
        [(_, due_next)] = h.rt.store.scheduled_for("lead-1")
        assert due_next == pytest.approx(h.clock.now().timestamp() + 2 * 3600)


def test_removed_sequence_ends_its_enrollments_cleanly(
    make_harness: Callable[..., Harness], value_first: Path
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.advance(timedelta(minutes=10))
        value_first.unlink()
        assert h.rt.catalog.reload_if_changed() is True
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == ["outcome-story"]
    enrollment = h.rt.store.enrollment("lead-1", "value-first")
    assert enrollment is not None
    assert (enrollment.state, enrollment.reason) == ("exited", "sequence removed")
    assert h.rt.store.scheduled_for("lead-1") == []


def test_catch_up_after_downtime_spreads_the_backlog_in_order(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(catchup_after=3600.0, catchup_spread=3600.0)
    leads = [f"lead-{i:02d}" for i in range(40)]
    with running(h):
        for number, lead in enumerate(leads):
            h.emit(event(f"e{number}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
        h.settle()
    # The worker was down for a day: every first touch is 24 h overdue.
    h.clock.advance(timedelta(days=1))
    now = h.clock.now().timestamp()
    moved = h.scheduler.catch_up(now)
    assert moved == len(leads)
    schedule = h.rt.store.schedule.entries()
    times = [score for _, score in schedule]
    assert min(times) >= now and max(times) <= now + 3600
    # Spread evenly, not fired at once: at most one touch per 90 s slot here.
    assert len(set(int((t - now) // 90) for t in times)) == len(leads)
    # Original order kept (they were due in emit order, a few ms apart).
    members = [m.split("\x1f")[3] for m, _ in schedule]
    assert members == sorted(members)
    # Nothing overdue remains, so a second catch-up moves nothing.
    assert h.scheduler.catch_up(now) == 0
    with running(h):
        h.settle()
        # No burst when the worker came back: only the first of the spread is due yet.
        assert len(h.sent()) <= 1
        h.advance(timedelta(minutes=61))
    assert len(h.sent()) == len(leads)
    member = touch_id("value-first", 1, "outcome-story", "lead-00")
    assert h.rt.store.ledger_state(member).startswith("sent:")
