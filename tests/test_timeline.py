"""Lean timeline entries (worker/store/timeline.py, worker/lead_history.py): one event's
entries stored as one batch, the lead's first data left to the lead hash, a false
``when`` kept as the rule's fingerprint and the event data it read, the outbox's
Message-ID as its unique part; ``nurture lead`` says word for word what the entries of
the previous version said, and those entries still read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.lead_memory import example_events
from tests.harness import Harness, event, running
from worker.events import validate_event
from worker.lead_history import UNCERTAIN, explain, rule_fingerprint, when_refusal
from worker.leadview import lead_view, render_text
from worker.sequences import condition_context
from worker.store.timeline import Kind, batch, entry, unpack_all

AT = 1795424400
MESSAGE_ID = "<9da8e739870e337b75e48d825943d4c3.nurture@nurture.example>"
#: Entries as the previous version stored them (one list item each), as the brief of
#: this change quotes them.
PREVIOUS = [
    '["e",1795424400,"lead.created","demo-1-0","website",0]',
    '["f",1795424400,{"email":"ann+0@example.com","first_name":"Ann","source":"website",'
    '"attributes.budget":5000}]',
    '["n",1795424400,"keep-giving","piece-1",3628800,"lead.created"]',
    '["w",1795424400,"outbound-intro","when: source is \'outbound\' (is \'website\')"]',
    '["t",1795424400,"quick-start","hello",0,"sent","outbox",'
    '"<9da8e739870e337b75e48d825943d4c3.nurture@nurture.example>",'
    '"Vi har modtaget din henvendelse"]',
]
ANN = {
    "id": "ann",
    "email": "ann+0@example.com",
    "first_name": "Ann",
    "source": "website",
    "attributes": {"budget": 5000},
}


def test_a_batch_reads_back_as_its_entries() -> None:
    stored = batch(
        AT + 0.75,
        [
            (Kind.EVENT, {"type": "lead.created", "id": "e1", "source": "web", "occurred": AT}),
            (Kind.FIELDS, {"changed": None}),
            (Kind.ENROLLED,
             {"sequence": "s", "step": "one", "due": AT + 600, "trigger": "lead.created"}),
            (Kind.ENROLLED, {"sequence": "t", "step": "one", "due": AT, "trigger": "form.sent"}),
            (Kind.NOT_ENROLLED, {"sequence": ["a", "b"], "why": "disqualified (budget)"}),
            (Kind.NOT_ENROLLED, {"sequence": "c", "rule": "abc123", "values": {"data.x": None}}),
        ],
    )  # fmt: skip
    assert stored == (
        '[1795424400,["E","lead.created","e1","web"],["n","s","one",600],'
        '["n","t","one",0,"form.sent"],["w",["a","b"],"disqualified (budget)"],'
        '["W","c","abc123",{"data.x":null}]]'
    )
    assert unpack_all(stored) == [
        {"kind": "event", "at": AT, "type": "lead.created", "id": "e1", "source": "web",
         "occurred": AT},
        {"kind": "fields", "at": AT},
        {"kind": "enrolled", "at": AT, "sequence": "s", "step": "one", "due": AT + 600,
         "trigger": "lead.created"},
        {"kind": "enrolled", "at": AT, "sequence": "t", "step": "one", "due": AT,
         "trigger": "form.sent"},
        {"kind": "not_enrolled", "at": AT, "sequence": "a", "why": "disqualified (budget)"},
        {"kind": "not_enrolled", "at": AT, "sequence": "b", "why": "disqualified (budget)"},
        {"kind": "not_enrolled", "at": AT, "sequence": "c", "rule": "abc123",
         "values": {"data.x": None}},
    ]  # fmt: skip


def test_the_outbox_message_id_is_stored_as_its_unique_part_and_read_back_whole() -> None:
    stored = entry(Kind.TOUCH, AT, sequence="s", step="one", due=AT, outcome="sent",
                   provider="outbox", provider_id=MESSAGE_ID, subject="Hej")  # fmt: skip
    assert stored == (
        '["t",1795424400,"s","one",0,"sent","outbox",'
        '"9da8e739870e337b75e48d825943d4c3@nurture.example","Hej"]'
    )
    assert unpack_all(stored)[0]["provider_id"] == MESSAGE_ID
    # Any other provider's id is kept as it is (SendGrid's X-Message-Id, say).
    other = entry(Kind.TOUCH, AT, sequence="s", step="one", outcome="sent",
                  provider="sendgrid", provider_id="abc@x", subject="Hej")  # fmt: skip
    assert unpack_all(other)[0]["provider_id"] == "abc@x"


def test_entries_of_the_previous_version_still_read_and_say_the_same() -> None:
    items = [item for raw in PREVIOUS for item in unpack_all(raw)]
    assert [i["kind"] for i in items] == ["event", "fields", "enrolled", "not_enrolled", "touch"]
    assert items[0]["occurred"] == AT and items[2]["trigger"] == "lead.created"
    assert items[1]["changed"]["first_name"] == [None, "Ann"]
    assert items[3]["why"] == "when: source is 'outbound' (is 'website')"
    assert items[4]["provider_id"] == MESSAGE_ID
    # explain() leaves an entry that says everything as it is.
    assert explain(items, ANN, _no_catalog()) == items


class _NoCatalog:
    def __init__(self) -> None:
        self.sequences: dict[str, Any] = {}


def _no_catalog() -> Any:
    return _NoCatalog()


def _fields(changed: dict[str, Any] | None, at: int = AT) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": "fields", "at": at}
    if changed is not None:
        item["changed"] = changed
    return item


def test_the_first_data_is_the_lead_now_with_the_later_changes_undone() -> None:
    timeline = [
        _fields(None),
        _fields({"source": ["referral", "website"], "attributes.budget": [None, 5000]}, AT + 60),
        _fields({"first_name": ["Anne", "Ann"]}, AT + 120),
    ]
    shown = explain(timeline, ANN, _no_catalog())
    assert shown[0]["changed"] == {
        "email": [None, "ann+0@example.com"],
        "first_name": [None, "Anne"],
        "source": [None, "referral"],
    }
    assert "note" not in shown[0]
    assert shown[1:] == timeline[1:]
    # A change nobody recorded (the lead's data is not what the last entry left): said.
    moved = {**ANN, "first_name": "Annie"}
    assert explain(timeline, moved, _no_catalog())[0]["note"] == UNCERTAIN
    # No data stored: the values are not known, and the view says so.
    gone = explain(timeline, None, _no_catalog())[0]
    assert gone["changed"] is None and "not known" in gone["note"]


def test_the_when_sentence_is_rebuilt_word_for_word_or_says_the_rule_changed(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    (catalog_dirs["sequences"] / "big-only.yaml").write_text(
        "id: big-only\n"
        "description: big budgets with a referrer\n"
        "trigger:\n"
        "  event: lead.created\n"
        "  when: {all: [{attributes.budget: {gte: 1000}}, {data.referrer: {exists: true}}]}\n"
        "steps:\n"
        "  - id: one\n"
        "    wait: 0s\n"
        "    template: outbound/intro\n",
        encoding="utf-8",
    )
    h = make_harness()
    with running(h):
        h.emit(event("e1", lead_id="big", email="big@example.com", attributes={"budget": 2000}))
        h.emit(event("e2", lead_id="small", email="s@example.com", attributes={"budget": 700}))
        h.settle()
        h.emit(event("e3", "lead.updated", lead_id="big", email=None, attributes={"budget": 800}))
        h.settle()
    catalog = h.rt.catalog.current.catalog
    rule = catalog.sequences["big-only"].trigger_when
    assert rule is not None
    # Stored: the fingerprint and the event data it read; the lead's fields come from
    # the lead's data then (the budget it had at the time, not now).
    ctx = condition_context({"attributes": {"budget": 2000}}, {})
    assert when_refusal(rule, ctx) == {
        "rule": rule_fingerprint(rule),
        "values": {"data.referrer": None},
    }
    raw = h.rt.store.redis.lrange(h.rt.store.keys.timeline("big"), 0, -1)
    assert b'["W","big-only","' + rule_fingerprint(rule).encode() + b'",' in raw[0]
    big = lead_view(h.rt.store, catalog, "big")
    text = render_text(big)
    assert (
        "not enrolled in big-only: when: data.referrer exists (is missing)" in text
    )  # budget 2000 then: the first part held
    assert big["not_in"]["big-only"] == "not enrolled: when: data.referrer exists (is missing)"
    small = lead_view(h.rt.store, catalog, "small")
    assert small["not_in"]["big-only"] == ("not enrolled: when: attributes.budget >= 1000 (is 700)")
    # The rule changes: what was recorded is not re-rendered with the new words.
    (catalog_dirs["sequences"] / "big-only.yaml").write_text(
        (catalog_dirs["sequences"] / "big-only.yaml").read_text().replace("1000", "500"),
        encoding="utf-8",
    )
    assert h.rt.catalog.reload_if_changed()
    changed = lead_view(h.rt.store, h.rt.catalog.current.catalog, "big")
    assert changed["not_in"]["big-only"] == (
        "not enrolled: when was false under the rule as it was then, changed since; "
        "values read: data.referrer=missing"
    )
    # The first fields entry is rebuilt from the lead now (budget 800) walked back.
    first = next(e for e in big["timeline"] if e["kind"] == "fields")
    assert first["changed"]["attributes.budget"] == [None, 2000]
    assert "fields changed: attributes.budget None -> 2000, email None -> 'big@example.com'" in text
    assert "fields changed: attributes.budget 2000 -> 800" in text
    json.dumps(big)


def test_a_trimmed_first_entry_leaves_the_later_changes_as_they_were() -> None:
    """The cap drops the oldest elements first: without the first fields entry there is
    nothing to rebuild, and every later change still says what it said."""
    timeline = [
        _fields({"source": ["referral", "website"]}, AT + 60),
        _fields({"first_name": ["Anne", "Ann"]}, AT + 120),
    ]
    assert explain(timeline, ANN, _no_catalog()) == timeline


def test_the_view_says_when_the_first_values_are_not_known() -> None:
    view = {
        "id": "gone",
        "lead": None,
        "enrollments": {},
        "timeline": explain([_fields(None)], None, _no_catalog()),
        "not_in": {},
    }
    assert (
        "2026-11-23 09:00:00 UTC  lead first stored (values not known: the lead's data is "
        "not stored)" in render_text(view)
    )


def test_a_false_step_condition_is_kept_lean_and_said_as_before(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    (catalog_dirs["sequences"] / "saas-step.yaml").write_text(
        "id: saas-step\n"
        "description: a step only for SaaS leads with a referrer\n"
        "trigger: {event: lead.created}\n"
        "steps:\n"
        "  - id: saas\n"
        "    wait: 0s\n"
        "    template: outbound/intro\n"
        "    when: {any: [{attributes.industry: saas}, {data.referrer.name: {exists: true}}]}\n"
        "  - id: everyone\n"
        "    wait: 1 day\n"
        "    template: outbound/intro\n",
        encoding="utf-8",
    )
    h = make_harness()
    with running(h):
        h.emit(event("e1", lead_id="x", email="x@example.com", attributes={"budget": 2000}))
        h.run_until(h.clock.now().timestamp() + 2 * 86400)
    catalog = h.rt.catalog.current.catalog
    step = catalog.sequences["saas-step"].step("saas")
    assert step is not None and step.when is not None
    raw = [r.decode() for r in h.rt.store.redis.lrange(h.rt.store.keys.timeline("x"), 0, -1)]
    lean = [json.loads(r) for r in raw if r.startswith('["K"')]
    assert [row[2:] for row in lean] == [
        ["saas-step", "saas", 0, rule_fingerprint(step.when),
         {"attributes.industry": None, "data.referrer.name": None}]
    ]  # fmt: skip
    view = lead_view(h.rt.store, catalog, "x")
    skip = next(e for e in view["timeline"] if e["kind"] == "skip")
    assert skip["reason"] == "condition"
    assert skip["detail"] == (
        "when: (attributes.industry is 'saas' or data.referrer.name exists) "
        "(values: attributes.industry=missing, data.referrer.name=missing)"
    )
    assert (
        "NOT SENT saas-step/saas: skipped: the step's condition is false (when: "
        "(attributes.industry is 'saas' or data.referrer.name exists)" in render_text(view)
    )
    # A skip recorded by the previous version (the sentence in full) reads as it was.
    old = '["k",1795424400,"s","one",0,"condition","when: source is \'x\' (is missing)"]'
    assert unpack_all(old)[0]["detail"] == "when: source is 'x' (is missing)"


def test_a_refusal_whose_sequence_is_gone_says_so_with_the_values_it_read() -> None:
    item = unpack_all(batch(AT, [(Kind.NOT_ENROLLED, {"sequence": "old", "rule": "abc123",
                                                      "values": {"data.x": None}})]))  # fmt: skip
    shown = explain(item, ANN, _no_catalog())
    assert shown[0]["why"] == (
        "when was false (that rule is no longer in the catalog; values read: data.x=missing)"
    )


#: Lines ``nurture lead`` printed for the example leads with the previous version's
#: entries (the sentences and the first data in full), the first six weeks (the
#: test catalog has no keep-giving).
SAID_BEFORE = {
    "demo-sam-0": [
        "fields changed: attributes.budget None -> 20000, attributes.industry None -> "
        "'manufacturing', company None -> 'Northwind', email None -> 'sam+0@example.com', "
        "first_name None -> 'Sam', source None -> 'outbound'",
        "not enrolled in quick-start: when: attributes.quick_start is True (is missing)",
        "not enrolled in referral-intro: when: (source is 'referral' or data.referrer exists) "
        "(values: source='outbound', data.referrer=missing)",
        "not enrolled in value-first: when: source is none of ['referral', 'outbound'] "
        "(is 'outbound')",
        "  referral-intro: not enrolled: when: (source is 'referral' or data.referrer exists) "
        "(values: source='outbound', data.referrer=missing)",
    ],
    "demo-mikko-0": [
        "NOT SENT referral-intro/call-weak: skipped: the step's condition is false (when: "
        "(data.referrer.relationship is 'weak' or data.referrer.relationship.strength is "
        "'weak') (values: data.referrer.relationship='client', "
        "data.referrer.relationship.strength=missing))",
        "NOT SENT referral-intro/intro: skipped: the step's condition is false (when: "
        "(data.referrer.relationship is one of ['strong', 'close'] or "
        "data.referrer.relationship.strength is 'strong') (values: "
        "data.referrer.relationship='client', data.referrer.relationship.strength=missing))",
        "not enrolled in value-first: when: source is none of ['referral', 'outbound'] "
        "(is 'referral')",
    ],
    "demo-li-0": [
        "fields changed: attributes.budget None -> 300, attributes.industry None -> "
        "'ecommerce', company None -> 'Sun Trading', email None -> 'li+0@example.cn', "
        "first_name None -> 'Li', source None -> 'website', timezone None -> 'Asia/Shanghai'",
        *(
            f"not enrolled in {s}: disqualified (budget)"
            for s in ("outbound-intro", "quick-start", "referral-intro")
        ),
        "  value-first: not enrolled: disqualified (budget)",
    ],
}


def test_nurture_lead_says_word_for_word_what_the_previous_version_said(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    events = [validate_event(doc) for doc in example_events(1)]
    with running(h):
        h.emit(*events)
        h.run_until(h.clock.now().timestamp() + 42 * 86400)
    store, catalog = h.rt.store, h.rt.catalog.current.catalog
    for lead_id, lines in SAID_BEFORE.items():
        text = render_text(lead_view(store, catalog, lead_id))
        for line in lines:
            assert line in text, (lead_id, line)
        raw = store.redis.lrange(store.keys.timeline(lead_id), 0, -1)
        assert b"when: " not in raw[0] and b"Northwind" not in raw[0]  # lean: no sentences
