"""A lead is a record that fills in over time (issue 11, item 1): any event for any lead
id is kept, fields merge in any arrival order (each keeps the value with the latest
``occurred_at``), and a lead enters the sequences of its first event the moment it first
becomes contactable. Real Redis, events run inline (tests/harness.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.conftest import ROOT
from tests.harness import Harness, event, running
from worker.crm.mapping import load_mapping
from worker.events import validate_event
from worker.http.adapters import pipedrive_notifications, translate

INLINE_QUEUE = True

PROFILE = {
    "company": "Berg ApS",
    "source": "website",
    "timezone": "Europe/Copenhagen",
    "attributes": {"industry": "saas", "problem": "churn", "budget": 5000},
}


def first_body(h: Harness) -> str:
    (message, *_) = h.messages()
    return str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def test_firstname_before_email_the_email_gets_the_first_name(
    make_harness: Callable[..., Harness],
) -> None:
    """HubSpot-style: the name change is applied before the address change."""
    h = make_harness()
    with running(h):
        h.emit(event("name", "lead.updated", email=None, first_name="Ann"))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.email is None and lead.data["first_name"] == "Ann"
        assert h.rt.store.dead_letter_count() == 0
        assert h.rt.store.enrollments("lead-1") == {}  # not contactable yet
        h.emit(event("mail", "lead.updated", **PROFILE))
        h.advance(timedelta(minutes=10))
    assert [(seq, step) for _, seq, step in h.sent()] == [("value-first", "outcome-story")]
    assert "Ann" in first_body(h)
    assert "Hi there" not in first_body(h)


def test_old_event_arriving_late_never_overwrites_newer_data(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(
            event(
                "new",
                "lead.updated",
                occurred_at="2026-11-23T08:50:00Z",
                first_name="Anne",
                attributes={"tier": "gold"},
            )
        )
        h.emit(
            event(
                "old",
                "lead.created",
                occurred_at="2026-11-23T08:00:00Z",
                first_name="Ann",
                attributes={"tier": "silver", "industry": "saas"},
                email="old@example.com",
            )
        )
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None
        # The older event fills what the newer one lacks, and nothing else.
        assert lead.data["first_name"] == "Anne"
        assert lead.data["attributes"] == {"tier": "gold", "industry": "saas"}
        assert lead.email == "ann@example.com"  # the newer address stays
        # A removal is as new as its event: an older value does not bring it back.
        h.emit(
            event(
                "rm", "lead.updated", occurred_at="2026-11-23T08:55:00Z", attributes={"tier": None}
            )
        )
        h.emit(
            event(
                "stale",
                "lead.updated",
                occurred_at="2026-11-23T08:52:00Z",
                attributes={"tier": "x"},
            )
        )
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and "tier" not in lead.data["attributes"]


def test_ties_go_to_the_later_arrival_and_no_time_means_applied_now(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    at = "2026-11-23T08:00:00Z"
    with running(h):
        h.emit(event("a", "lead.updated", occurred_at=at, first_name="First"))
        h.emit(event("b", "lead.updated", occurred_at=at, first_name="Second"))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.data["first_name"] == "Second"
        # Without occurred_at the event counts as happening when the worker applies it
        # (09:00 on the test clock): later than 08:00, so it wins...
        h.emit(event("c", "lead.updated", first_name="Now"))
        # ... and an event that says it happened before that does not.
        h.emit(event("d", "lead.updated", occurred_at="2026-11-23T08:30:00Z", first_name="Old"))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.data["first_name"] == "Now"


def test_lead_without_address_is_kept_and_enrolled_once_contactable(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("c", "lead.created", email=None, first_name="Ann", **PROFILE))
        h.settle()
        assert h.rt.store.dead_letter_count() == 0
        assert h.rt.store.enrollments("lead-1") == {}
        h.emit(event("u1", "lead.updated"))  # the address arrives
        h.emit(event("u2", "lead.updated", company="Berg A/S"))  # enrolls nothing more
        h.settle()
        # The sequences on lead.created (the shared test catalog may hold keep-giving).
        assert (
            {"value-first"}
            <= set(h.rt.store.enrollments("lead-1"))
            <= {
                "value-first",
                "keep-giving",
            }
        )
        enrollment = h.rt.store.enrollment("lead-1", "value-first")
        assert enrollment is not None and enrollment.trigger["id"] == "u1"
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert [step for _, seq, step in h.sent() if seq == "value-first"] == [
        "outcome-story",
        "case-study",
        "testimonial",
        "how-to-guide",
    ]


def test_an_exit_seen_before_the_address_keeps_the_lead_out(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("c", "lead.created", email=None, **PROFILE))
        h.emit(event("r", "lead.replied", email=None))
        h.emit(event("u", "lead.updated"))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert h.sent() == []


# Pipedrive webhooks v2 payloads as https://pipedrive.readme.io/docs/guide-for-webhooks-v2
# describes them: meta.action create/change, data the person, previous what changed.
def _pipedrive(action: str, person: dict[str, Any], previous: Any, uid: str) -> Any:
    return {
        "meta": {
            "action": action,
            "entity": "person",
            "entity_id": str(person["id"]),
            "id": uid,
            "timestamp": "2026-11-23T09:00:00.000Z",
            "version": "2.0",
            "company_id": "1",
            "user_id": "2",
            "type": "general",
            "attempt": 1,
            "change_source": "app",
            "is_bulk_edit": False,
        },
        "data": person,
        "previous": previous,
    }


def test_pipedrive_person_without_email_then_change_adding_it_is_nurtured(
    make_harness: Callable[..., Harness],
) -> None:
    mapping = load_mapping(ROOT / "crm" / "pipedrive.yaml")
    person = {"id": 42, "name": "Ann Berg", "first_name": "Ann", "last_name": "Berg"}
    created = _pipedrive("create", {**person, "emails": []}, None, "u1")
    changed = _pipedrive(
        "change",
        {**person, "emails": [{"label": "work", "value": "ann@example.com", "primary": True}]},
        {"emails": []},
        "u2",
    )
    h = make_harness()
    with running(h):
        for payload in (created, changed):
            translation = translate(mapping, pipedrive_notifications(payload))
            assert translation.errors == [] and translation.ignored == []
            for _, doc in translation.events:
                assert h.emit(validate_event(doc)).accepted == 1
            h.settle()
        assert "value-first" in h.rt.store.enrollments("42")
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert [step for lead, _, step in h.sent() if lead == "42"][:1] == ["outcome-story"]
    assert len(h.sent()) >= 2
    assert "Ann" in first_body(h)
    assert h.rt.store.dead_letter_count() == 0
