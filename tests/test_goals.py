"""Goals (issue 14, item 3): reaching one ends the sequence for the lead and counts a
conversion for the sequence and its last touch, once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.harness import Harness, event
from tests.test_pipeline import INBOUND, steps_sent
from worker.sequences import load_catalog

INLINE_QUEUE = True


def test_a_booked_meeting_converts_on_the_last_touch_once(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    h.emit(event("e1", **INBOUND))
    h.settle()
    h.advance(timedelta(minutes=10))
    h.run_until(h.clock.now().timestamp() + 4 * 86400)
    assert steps_sent(h) == ["outcome-story", "case-study"]
    booked = event("e2", "meeting.booked", email=None)
    h.emit(booked)
    h.settle()
    enrollment = h.rt.store.enrollment("lead-1", "value-first")
    assert enrollment is not None
    assert (enrollment.state, enrollment.reason) == ("exited", "goal:meeting.booked")
    stats = h.rt.store.stats()["value-first"]
    assert stats["case-study"]["converted"] == 1
    assert "converted" not in stats["outcome-story"]
    assert stats["_goal"] == {"converted": 1, "meeting.booked": 1}
    # The CRM sends it again (or deal.won follows): nothing more is counted.
    h.rt.store.redis.delete(h.rt.store.keys.event("e2"))  # past the replay guard
    h.emit(booked)
    h.emit(event("e3", "deal.won", email=None))
    h.settle()
    h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == ["outcome-story", "case-study"]
    assert h.rt.store.stats()["value-first"]["_goal"] == {"converted": 1, "meeting.booked": 1}


def test_a_goal_before_any_email_counts_for_the_sequence_only(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    h.emit(event("e1", **INBOUND))
    h.emit(event("e2", "deal.won", email=None))
    h.settle()
    stats = h.rt.store.stats()["value-first"]
    assert stats == {"_goal": {"converted": 1, "deal.won": 1}}


def test_validate_refuses_a_goal_that_is_the_trigger(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "id: s\ntrigger: meeting.booked\ngoal: [deal.won, meeting.booked, meeting.boked]\n"
        "steps:\n  - {id: a, wait: 0s, template: value/guide}\n",
        encoding="utf-8",
    )
    _, problems = load_catalog(tmp_path)
    text = [f"{p.line}: {p.message} — {p.fix}" for p in problems]
    assert len(text) == 2, text
    assert any(t.startswith("3: goal lists the trigger event meeting.booked") for t in text)
    assert "3: goal event 'meeting.boked' looks like a typo of meeting.booked" in "\n".join(text)
