"""Event parsing: one object, an array or JSON Lines; errors name the event and field."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from worker.events import parse_events
from worker.tokens import make_token, read_token

GOOD = {
    "id": "evt-7f3a",
    "type": "lead.created",
    "occurred_at": "2026-11-22T09:30:00Z",
    "lead": {
        "id": "crm-1042",
        "email": "ann@example.com",
        "first_name": "Ann",
        "locale": "da",
        "timezone": "Europe/Copenhagen",
        "source": "referral",
        "attributes": {"industry": "saas", "budget": 800},
    },
    "data": {"referrer": {"name": "Ole Holm", "company": "Holm & Co"}},
}


def test_contract_example_parses() -> None:
    events, errors = parse_events(json.dumps(GOOD).encode())
    assert errors == []
    assert events[0].lead.attributes["budget"] == 800
    assert events[0].occurred_at is not None and events[0].occurred_at.tzinfo is not None


def test_array_and_json_lines() -> None:
    second = {**GOOD, "id": "evt-2"}
    as_array, _ = parse_events(json.dumps([GOOD, second]))
    as_lines, _ = parse_events(json.dumps(GOOD) + "\n\n" + json.dumps(second) + "\n")
    assert [e.id for e in as_array] == [e.id for e in as_lines] == ["evt-7f3a", "evt-2"]


def test_errors_name_index_and_field() -> None:
    bad = [GOOD, {**GOOD, "type": "Lead Created"}, {**GOOD, "lead": {"id": "x", "mail": "a"}}]
    events, errors = parse_events(json.dumps(bad))
    assert [e.id for e in events] == ["evt-7f3a"]
    assert [(e.index, e.reason.split(":")[0]) for e in errors] == [(1, "type"), (2, "lead.mail")]
    assert "lowercase dotted name" in errors[0].reason
    assert "unknown field" in errors[1].reason


def test_naive_time_bad_zone_and_bad_email_are_refused() -> None:
    bad = {
        **GOOD,
        "occurred_at": "2026-11-22T09:30:00",
        "lead": {"id": "x", "email": "not-an-address", "timezone": "Europe/Kobenhavn"},
    }
    _, errors = parse_events(json.dumps(bad))
    reason = errors[0].reason
    assert "occurred_at" in reason and "lead.email" in reason and "lead.timezone" in reason


def test_unicode_email_is_accepted_and_invalid_utf8_refused() -> None:
    ok = {**GOOD, "lead": {"id": "x", "email": "søren@æble.dk"}}
    events, errors = parse_events(json.dumps(ok, ensure_ascii=False).encode())
    assert errors == [] and events[0].lead.email == "søren@æble.dk"
    _, errors = parse_events(b'{"id": "\xff"}')
    assert "UTF-8" in errors[0].reason


def test_absurd_numbers_and_deep_nesting_are_clear_errors() -> None:
    _, errors = parse_events('{"id": ' + "9" * 5000 + "}")
    assert errors and errors[0].reason.startswith("invalid JSON")
    _, errors = parse_events("[" * 100_000 + "]" * 100_000)
    assert errors and "nested too deeply" in errors[0].reason


def test_lead_ids_with_control_characters_are_refused() -> None:
    _, errors = parse_events(json.dumps({**GOOD, "lead": {"id": "a\x1fb", "email": "a@b.dk"}}))
    assert errors and "lead.id" in errors[0].reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_any_json_gives_events_or_errors_never_an_exception(doc: object) -> None:
    events, errors = parse_events(json.dumps(doc))
    assert len(events) + len(errors) >= 1 or doc == []


def test_unsubscribe_tokens_cannot_be_forged() -> None:
    token = make_token("secret", "crm-1042")
    assert read_token("secret", token) == "crm-1042"
    assert read_token("other-secret", token) is None
    forged = make_token("guess", "crm-1043")
    assert read_token("secret", forged) is None
    _head, sig = token.split(".")
    assert read_token("secret", make_token("secret", "crm-1043").split(".")[0] + "." + sig) is None
    assert read_token("secret", "garbage") is None
    assert read_token("secret", "!!!.???") is None
