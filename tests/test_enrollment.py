"""The enrollment state machine and its stored form (existing data must still read)."""

from __future__ import annotations

import json

from worker.enrollment import (
    DISQUALIFIED,
    Enrollment,
    EnrollmentState,
    ExitReason,
    TouchRef,
    touch_id,
)
from worker.store import Reservation, Verdict

TRIGGER = {"id": "e1", "type": "lead.created", "occurred_at": "2026-11-23T09:00:00Z", "data": {}}


def test_a_stored_enrollment_reads_and_writes_back_the_same() -> None:
    stored = (
        '{"generation":2,"state":"active","step":"case-study","done":["outcome-story"],'
        '"trigger":{"id":"e1"},"started":1700000000.5,"reason":null,"attempts":1}'
    )
    enrollment = Enrollment.from_json(stored)
    assert enrollment.state is EnrollmentState.ACTIVE
    assert json.loads(enrollment.to_json()) == json.loads(stored)


def test_enroll_advance_and_finish() -> None:
    first = Enrollment.start(None, "a", TRIGGER, 100.0)
    assert (first.generation, first.state, first.step) == (1, EnrollmentState.ACTIVE, "a")
    second = first.retry().advance("b")
    assert (second.step, second.done, second.attempts) == ("b", ["a"], 0)
    finished = second.skip(None)
    assert (finished.state, finished.step, finished.done) == ("done", None, ["a", "b"])
    again = Enrollment.start(finished, "a", TRIGGER, 200.0)
    assert (again.generation, again.done) == (2, [])


def test_exit_reasons_are_stored_as_before() -> None:
    active = Enrollment.start(None, "a", TRIGGER, 100.0)
    cases = {
        DISQUALIFIED: "disqualified",
        ExitReason.exit_on("lead.replied"): "exit_on:lead.replied",
        ExitReason.suppressed("bounce"): "suppressed:bounce",
        ExitReason.unsubscribed("spamreport"): "spamreport",
    }
    for reason, text in cases.items():
        exited = active.exit(reason)
        assert (exited.state, exited.reason, exited.step) == ("exited", text, None)
        assert not exited.active and exited.pending_touch("seq", "lead-1") is None


def test_touch_ids_round_trip() -> None:
    member = touch_id("value-first", 3, "case-study", "lead:1")
    ref = TouchRef.parse(member)
    assert (ref.sequence, ref.generation, ref.step, ref.lead_id) == (
        "value-first",
        3,
        "case-study",
        "lead:1",
    )
    assert ref.member == member and ref.ledger_field == "value-first:3:case-study"


def test_reservations_read_from_the_script_answer() -> None:
    assert Reservation.from_script([b"ok", b"123.5"]) == Reservation(Verdict.OK, "123.5")
    assert Reservation.from_script([b"capped", b"200"]).free_at == 200.0
    assert Reservation.from_script([b"done", b"sent"]).detail == "sent"
    assert Reservation.from_script([b"stale"]).verdict is Verdict.STALE
