"""Event parsing: one object, an array or JSON Lines; errors name the event and field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.events import BUILTIN_TYPES, parse_events
from worker.tokens import make_token, read_token, signed_token

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


def test_invalid_utf8_is_refused() -> None:
    _, errors = parse_events(b'{"id": "\xff"}')
    assert "UTF-8" in errors[0].reason


# The address rule: SendGrid's "Invalid email addresses" page
# (https://www.twilio.com/docs/sendgrid/ui/sending-email/invalid-emails) and its
# maintainers on Unicode local parts (https://github.com/sendgrid/sendgrid-python/pull/119):
# ASCII local parts only; IDN domains (RFC 5890) are sent in their ASCII form.
@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann.Berg+nurture@Example.COM", "Ann.Berg+nurture@Example.COM"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("soren@æble.dk", "soren@xn--ble-xla.dk"),
        ("jorg@exämple.de", "jorg@xn--exmple-cua.de"),
        ("user@例子.广告", "user@xn--fsqu00a.xn--4rr70v"),
    ],
)
def test_sendable_addresses_are_accepted_idn_domains_in_ascii_form(
    address: str, stored: str
) -> None:
    events, errors = parse_events(
        json.dumps({**GOOD, "lead": {"id": "x", "email": address}}, ensure_ascii=False).encode()
    )
    assert errors == []
    assert events[0].lead.email == stored


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("jörg@exämple.de", "non-ASCII character ('ö')"),
        ("søren@æble.dk", "non-ASCII character ('ø')"),
        ("用户@例子.广告", "SendGrid does not send to"),
        ("ann@@example.com", "exactly one @"),
        ("ann", "exactly one @"),
        ("@example.com", "nothing before the @"),
        ("ann@", "nothing after the @"),
        (".ann@example.com", "a dot at the start"),
        ("ann..berg@example.com", "two dots in a row"),
        ("ann berg@example.com", "' ' before the @"),
        ('"ann"@example.com', "quoted local parts"),
        ("ann@localhost", "such as example.com"),
        ("ann@ex_ample.com", "such as example.com"),
        ("ann@-example.com", "such as example.com"),
        ("ann@[192.0.2.1]", "IP address literal"),
        ("ann@10.0.0.1", "ends in a number"),
        ("ann@☃.net", "not a valid internationalised domain name"),
        ("a" * 65 + "@example.com", "more than 64 characters"),
        ("a" * 64 + "@" + ("b" * 60 + ".") * 4 + "com", "longer than 254"),
    ],
)
def test_unsendable_addresses_are_refused_with_the_reason(address: str, reason: str) -> None:
    _, errors = parse_events(
        json.dumps({**GOOD, "lead": {"id": "x", "email": address}}, ensure_ascii=False).encode()
    )
    assert len(errors) == 1
    assert errors[0].reason.startswith("lead.email: ")
    assert reason in errors[0].reason, errors[0].reason


def test_new_event_types_are_builtin() -> None:
    assert {"lead.deleted", "crm.changed"} <= BUILTIN_TYPES


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
    # The older signed form: another lead's id under this lead's signature.
    _head, sig = signed_token("secret", "crm-1042").split(".")
    other = signed_token("secret", "crm-1043").split(".")[0]
    assert read_token("secret", other + "." + sig) is None
    assert read_token("secret", "garbage") is None
    assert read_token("secret", "!!!.???") is None
