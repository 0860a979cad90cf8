"""Compact per-lead state (worker/store/leads.py, enrollments.py, timeline.py): the packed
forms read back what was written, and a lead stored by the previous version (JSON
enrollments, the lead's data and field times as they were, the timeline as a stream)
keeps going with this one: the same sends, the same timeline, converted as it goes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.lead_memory import example_events
from tests.harness import Harness, running
from worker.enrollment import Enrollment, EnrollmentState, ExitReason
from worker.events import validate_event
from worker.leadview import lead_view, render_text
from worker.store.enrollments import pack_enrollment, unpack_enrollment
from worker.store.leads import LeadRecord, lead_record, pack_flag
from worker.store.timeline import TIMELINE_MAXLEN, Kind, entry, unpack

TRIGGER = {"id": "e1", "type": "lead.created", "occurred_at": "2026-11-23T09:00:00Z", "data": {}}


@pytest.mark.parametrize(
    "enrollment",
    [
        Enrollment(1, EnrollmentState.ACTIVE, "intro", [], TRIGGER, 1795424400.0),
        Enrollment(
            3,
            EnrollmentState.EXITED,
            None,
            ["intro", "case-study"],
            {**TRIGGER, "occurred_at": "2026-11-23T09:00:00.250000+01:00", "data": {"a": [1]}},
            1795424400.25,
            "exit_on:lead.replied|odd reason, with commas",
            2,
        ),
        Enrollment(2, EnrollmentState.DONE, None, ["x"], {"id": "e", "custom": 1}, 0.0),
        Enrollment(1, EnrollmentState.ACTIVE, "odd|step", [], {}, 5.5),
    ],
)
def test_a_packed_enrollment_reads_back_the_same(enrollment: Enrollment) -> None:
    stored = pack_enrollment(enrollment)
    assert unpack_enrollment(stored) == enrollment
    assert unpack_enrollment(enrollment.to_json()) == enrollment  # the older JSON form
    if "|" not in (enrollment.step or ""):
        assert len(stored) < len(enrollment.to_json()) * 0.6
        assert stored.startswith(f"{enrollment.generation}|{enrollment.state.value[0]}|")


def test_packed_timeline_entries_read_back_the_same() -> None:
    at = 1795424400.0
    cases: list[tuple[Kind, dict[str, Any]]] = [
        (Kind.EVENT, {"type": "lead.created", "id": "e1", "occurred": at - 5, "source": None}),
        (Kind.FIELDS, {"changed": {"email": [None, "a@b.c"], "tags": ["x", ["y", "z"]]}}),
        (Kind.ENROLLED, {"sequence": "s", "step": "one", "due": at + 86400, "trigger": "t"}),
        (Kind.TOUCH, {"sequence": "s", "step": "one", "due": at, "outcome": "sent",
                      "provider": "sendgrid", "provider_id": "abc", "subject": "Hej, Åse"}),
        (Kind.SKIP, {"sequence": "s", "step": "one", "due": at, "reason": "frequency cap",
                     "until": at + 3600}),
        (Kind.PROVIDER, {"event": "click", "type": None, "sequence": "s", "step": "one",
                         "provider_id": "abc", "url": "https://x.example/"}),
        (Kind.DECLINE, {"sequence": "decline", "reason": None}),
    ]  # fmt: skip
    for kind, data in cases:
        stored = entry(kind, at, **data)
        old = json.dumps({"kind": kind.value, "at": at, **data}, default=str, sort_keys=True)
        expected = {k: v for k, v in json.loads(old).items() if v is not None}
        got = {k: v for k, v in unpack(stored).items() if v is not None}
        assert got == expected, kind
        assert unpack(old) == json.loads(old)  # the older JSON form
        assert len(stored) < len(old)


def test_field_times_and_time_flags_read_back_as_written() -> None:
    times = {"email": 1795424400.0, "first_name": 1795424400.0, "company": 1795424401.5}
    written = {"fts": json.dumps(times, sort_keys=True), "seen:lead.created": "1795424400.0"}
    written["contactable"] = "1795424400.25"
    stored = {name.encode(): pack_flag(name, value).encode() for name, value in written.items()}
    grouped = {"1795424400": ["email", "first_name"], "1795424401.5": ["company"]}
    assert json.loads(stored[b"fts"]) == grouped
    assert stored[b"seen:lead.created"] == b"1795424400"
    record = lead_record("l", {b"d": b"{}", **stored})
    assert record is not None and record.flags == written
    assert record.field_times() == times


def test_field_times_written_with_the_data_name_only_what_differs() -> None:
    data = {"id": "l", "email": "a@b.c", "company": "X", "attributes": {"budget": 5}}
    times = {"email": 1795424400.0, "company": 1795424400.0, "attributes.budget": 1795424400.0}
    times["attributes.gone"] = 1795424400.0  # removed by a null: not in the data, named
    times["company"] = 1795424401.5
    packed = pack_flag("fts", json.dumps(times, sort_keys=True), data)
    assert json.loads(packed) == {"1795424400": ["*", ".gone"], "1795424401.5": ["company"]}
    record = lead_record("l", {b"d": json.dumps(data).encode(), b"fts": packed.encode()})
    assert record is not None and record.field_times() == times
    # A field of the data without a time (stored before field times): no "*".
    assert "*" not in pack_flag("fts", json.dumps({"email": 1.0}), data)


def test_saving_new_data_without_field_times_keeps_each_fields_time(
    make_harness: Callable[..., Harness],
) -> None:
    """The pipeline writes the field times with every change of the data; data saved
    without them (same times) keeps each field's own time, not the new data's."""
    store = make_harness().rt.store
    data = {"id": "l", "email": "a@b.c", "attributes": {"x": 1}}
    times = {"email": 1795424400.0, "attributes.x": 1795424400.0}
    store.save_lead("l", data, None, {"fts": json.dumps(times, sort_keys=True)})
    assert store.redis.hget(store.keys.lead("l"), "fts") == b'{"1795424400":["*"]}'
    # The key names the lead: its id is left out of the stored data and put back.
    assert store.redis.hget(store.keys.lead("l"), "d") == b'{"email":"a@b.c","attributes":{"x":1}}'
    assert store.get_lead("l") == LeadRecord("l", data, {"fts": json.dumps(times, sort_keys=True)})
    store.save_lead("l", {**data, "attributes": {}, "company": "Y"}, "a@b.c")
    record = store.get_lead("l")
    assert record is not None and record.field_times() == times


def _to_old_format(h: Harness, lead_id: str) -> None:
    """Rewrite one lead's stored values the way the previous version wrote them (the
    lead hash's ledger and received content kept as they are)."""
    client, keys = h.rt.store.redis, h.rt.store.keys
    record = h.rt.store.get_lead(lead_id)
    assert record is not None
    enrollments = h.rt.store.enrollments(lead_id)
    timeline = h.rt.store.timeline.read(lead_id)
    kept = {
        k: v for k, v in client.hgetall(keys.lead(lead_id)).items() if k.startswith((b"l:", b"r"))
    }
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.lead(lead_id), keys.timeline(lead_id))
    old_lead = {"d": json.dumps(record.data, ensure_ascii=False), **record.flags, **kept}
    pipe.hset(keys.lead(lead_id), mapping=old_lead)  # type: ignore[arg-type]
    for sequence, enrollment in enrollments.items():
        pipe.hset(keys.lead(lead_id), f"e:{sequence}", enrollment.to_json())
    for item in timeline:
        old = json.dumps(item, default=str, sort_keys=True)
        pipe.xadd(keys.timeline(lead_id), {"e": old}, maxlen=TIMELINE_MAXLEN)
    pipe.execute()
    assert client.type(keys.timeline(lead_id)) == b"stream"
    assert all(v.startswith(b"{") for v in _enrollment_values(client, keys.lead(lead_id)))


def _enrollment_values(client: Any, key: str) -> list[bytes]:
    return [v for k, v in client.hgetall(key).items() if k.startswith(b"e:")]


def _story(view: dict[str, Any], lead_id: str) -> list[tuple[Any, ...]]:
    """The lead's timeline as what happened when (provider ids differ between leads)."""
    return [
        (e["kind"], int(e["at"]), e.get("sequence"), e.get("step"), e.get("outcome"))
        for e in view["timeline"]
    ]


def test_a_lead_stored_by_the_previous_version_keeps_going(
    make_harness: Callable[..., Harness],
) -> None:
    """Two copies of the example leads; the first copy's state is rewritten in the old
    format once enrolled; both then run six weeks: the same sends and timelines."""
    h = make_harness()
    events = [validate_event(doc) for doc in example_events(2)]
    with running(h):
        h.emit(*events)
        h.settle()
        old_ids = [e.lead.id for e in events if e.lead.id.endswith("-0")]
        for lead_id in old_ids:
            _to_old_format(h, lead_id)
        h.run_until(h.clock.now().timestamp() + 42 * 86400)
    catalog = h.rt.catalog.current.catalog
    sent = h.sent()
    client, keys = h.rt.store.redis, h.rt.store.keys
    for old_id in old_ids:
        new_id = old_id.removesuffix("-0") + "-1"
        old_sends = sorted((s, step) for lead, s, step in sent if lead == old_id)
        assert old_sends == sorted((s, step) for lead, s, step in sent if lead == new_id)
        old_view, new_view = (lead_view(h.rt.store, catalog, i) for i in (old_id, new_id))
        assert _story(old_view, old_id) == _story(new_view, new_id)
        assert old_view["enrollments"] == new_view["enrollments"]
        text = render_text(old_view)
        assert "SENT" in text or "NOT SENT" in text or "enrolled" in text
        if old_sends:  # a sent touch wrote its entry: the stream became the list, and
            # the enrollment it moved on is packed (one that ended before stays JSON)
            assert client.type(keys.timeline(old_id)) == b"list"
            values = _enrollment_values(client, keys.lead(old_id))
            assert any(not v.startswith(b"{") for v in values)


def test_an_old_stream_timeline_is_read_and_becomes_the_list_at_the_next_write(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    store, client = h.rt.store, h.rt.store.redis
    key = store.keys.timeline("old")
    old = [
        {"kind": "event", "at": 1795424400.5, "type": "lead.created", "id": "e1", "source": None},
        {"kind": "enrolled", "at": 1795424400.5, "sequence": "s", "step": "one", "due": 1.0},
    ]
    for item in old:
        client.xadd(key, {"e": json.dumps(item, sort_keys=True)}, maxlen=TIMELINE_MAXLEN)
    assert store.timeline.read("old") == old
    store.timeline.add("old", entry(Kind.EXITED, 1795430000.0, sequence="s", reason="goal:x"))
    assert client.type(key) == b"list" and client.ttl(key) > 0
    assert store.timeline.read("old") == [
        *old,
        {"kind": "exited", "at": 1795430000, "sequence": "s", "reason": "goal:x"},
    ]


def test_only_a_new_enrollment_reads_the_lead_hash_to_drop_ended_ledger_entries(
    make_harness: Callable[..., Harness],
) -> None:
    """Enrolling again (generation 2 on) drops the ended generations' ledger fields (one
    HKEYS of the lead hash); exiting such an enrollment before its first step (no step
    passed yet) is no new enrollment: no HKEYS, nothing dropped."""
    store = make_harness().rt.store
    client, key = store.redis, store.keys.lead("lead-1")

    def hkeys_calls() -> int:
        stats = client.info("commandstats").get("cmdstat_hkeys", {})
        return int(stats.get("calls", 0))

    first = Enrollment.start(None, "intro", TRIGGER, 1.0)
    store.enrolled.write("lead-1", "value-first", first, new=True)
    client.hset(key, "l:value-first:1:intro", "sent:1")
    ended = first.exit(ExitReason.exit_on("lead.replied"))
    store.enrolled.write("lead-1", "value-first", ended)
    second = Enrollment.start(ended, "intro", {**TRIGGER, "id": "e2"}, 2.0)
    calls = hkeys_calls()
    store.enrolled.write("lead-1", "value-first", second, new=True)
    assert hkeys_calls() == calls + 1
    assert not client.hexists(key, "l:value-first:1:intro")  # the ended generation's
    client.hset(key, "l:value-first:2:intro", "skipped:2")
    calls = hkeys_calls()
    assert second.done == [] and second.generation == 2
    store.enrolled.write("lead-1", "value-first", second.exit(ExitReason.exit_on("lead.won")))
    assert hkeys_calls() == calls
    assert client.hget(key, "l:value-first:2:intro") == b"skipped:2"
    assert store.enrollment("lead-1", "value-first") == second.exit(ExitReason.exit_on("lead.won"))
