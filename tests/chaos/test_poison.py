"""Poison inputs: through `nurture emit` (a subprocess) and through the in-process
pipeline (real dramatiq workers on the test Redis, SendGrid stand-in). A bad event or
a template that breaks for one lead gives a clear error and a dead-letter record; the
worker keeps going and every other lead's touches go out as usual.

(`POST /events` poison tests live with the HTTP service's tests.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.chaos.procs import (
    SEQUENCE,
    STEPS,
    TRIGGER,
    Procs,
    chaos_event,
    report,
    touch_key,
    worker_env,
)
from tests.harness import Harness, running
from tests.sendgrid_standin import SendGridStandIn
from worker.actors import EVENTS_QUEUE, TOUCHES_QUEUE
from worker.events import Event, validate_event
from worker.pipeline import EventProcessor
from worker.store import LeadRecord
from worker.store.keys import Keys

KEYS = Keys()
# Sendable: ASCII local parts, internationalised domains (see worker/addresses.py).
UNICODE_EMAILS = [
    "anne.berg@exämple.dk",
    "user@例子.广告",
    "theta@παράδειγμα.δοκιμή",
    "pele+tag@exämple.com",
]


def _queued(client: redis.Redis) -> dict[str, int]:
    """What `nurture emit` left behind: accepted event ids and queued messages."""
    return {
        "event_ids": len(list(client.scan_iter(match=f"{KEYS.prefix}:evt:*", count=1000))),
        "queued_messages": int(client.llen(f"dramatiq:{EVENTS_QUEUE}")),
    }


def _emit_env(redis_url: str, catalog: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url=redis_url, catalog_dirs=catalog, state_dir=tmp_path)


# -- nurture emit ----------------------------------------------------------------------


@pytest.mark.chaos
def test_emit_refuses_a_bad_file_naming_each_bad_event_and_queues_nothing(
    redis_url: str, chaos_catalog: dict[str, Path], procs: Procs, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    good = [chaos_event("good-1"), chaos_event("good-2", email=UNICODE_EMAILS[0])]
    bad: list[Any] = [
        {"id": "bad-types", "type": TRIGGER, "lead": {"id": 42, "email": ["a@b.co"]}},
        {"id": "bad-no-lead", "type": TRIGGER},
        {"id": "bad-type-name", "type": "Lead Created!", "lead": {"id": "x", "email": "x@y.co"}},
        {"id": "bad-email", "type": TRIGGER, "lead": {"id": "x", "email": "not an email"}},
        {"id": "bad-huge", "type": TRIGGER, "lead": {"id": "x" * 100_000, "email": "x@y.co"}},
        {"id": "bad-when", "type": TRIGGER, "occurred_at": "yesterday", "lead": {"id": "x"}},
        {"id": "bad-extra", "type": TRIGGER, "lead": {"id": "x"}, "budget": 5},
        {"id": "bad-attrs", "type": TRIGGER, "lead": {"id": "x", "attributes": [1, 2]}},
        {"id": "bad-zone", "type": TRIGGER, "lead": {"id": "x", "timezone": "Mars/Olympus"}},
        17,
        "lead.created",
    ]
    batch = [good[0], *bad, good[1]]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(batch, ensure_ascii=False), encoding="utf-8")
    env = _emit_env(redis_url, chaos_catalog, tmp_path)

    refused = procs.run(["emit", str(path)], env)
    stderr = refused.stderr.decode()
    report("emit-bad-file", exit_code=refused.returncode, bad_events=len(bad), **_queued(client))
    assert refused.returncode == 1, stderr
    for index in range(1, len(bad) + 1):
        assert f"event {index}:" in stderr, f"event {index} not named:\n{stderr}"
    assert "event 0:" not in stderr and f"event {len(batch) - 1}:" not in stderr
    assert "nothing queued" in stderr
    assert "Traceback" not in stderr
    assert _queued(client) == {"event_ids": 0, "queued_messages": 0}

    # The same good events on their own go through (nothing was half-accepted).
    path.write_text(json.dumps(good, ensure_ascii=False), encoding="utf-8")
    accepted = procs.run(["emit", str(path)], env)
    assert accepted.returncode == 0, accepted.stderr.decode()
    assert "queued 2 event(s)" in accepted.stdout.decode()


@pytest.mark.chaos
def test_emit_json_lines_names_every_bad_line_not_only_the_first(
    redis_url: str, chaos_catalog: dict[str, Path], procs: Procs, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    lines = [
        json.dumps(chaos_event("jl-0")),
        '{"id": "jl-1", "type": "chaos.start", "lead": {"id": "x"',  # truncated JSON
        json.dumps(chaos_event("jl-2")),
        json.dumps({"id": "jl-3", "type": "NOT VALID", "lead": {"id": "y"}}),
        "this is not json either",
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = procs.run(["emit", str(path)], _emit_env(redis_url, chaos_catalog, tmp_path))
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert _queued(client) == {"event_ids": 0, "queued_messages": 0}
    for line in (2, 4, 5):  # 1-based line numbers of the three bad lines
        assert f"line {line}" in stderr or f"event {line - 1}:" in stderr, (
            f"bad line {line} is not named:\n{stderr}"
        )


def _unencodable_event() -> dict[str, Any]:
    # A lone UTF-16 surrogate, as some CRMs emit when they cut an emoji in half.
    # It is valid JSON ("\ud83d" escaped) and passes validation as an attribute.
    return chaos_event("cut-emoji", attributes={"note": "\ud83d"})


def _deep_event() -> dict[str, Any]:
    nested: Any = "bottom"
    for _ in range(300):
        nested = [nested]
    return {**chaos_event("deep-data"), "data": {"nested": nested}}


@pytest.mark.chaos
@pytest.mark.parametrize(
    "make_poison", [_unencodable_event, _deep_event], ids=["lone-surrogate", "deeply-nested"]
)
def test_emit_poison_that_passes_validation_is_refused_cleanly(
    make_poison: Callable[[], dict[str, Any]],
    redis_url: str,
    chaos_catalog: dict[str, Path],
    procs: Procs,
    tmp_path: Path,
) -> None:
    """Events the validator accepts but that cannot be queued (serialized) must be
    named and refused like any bad event: exit 1, nothing queued, no event id burnt."""
    client = redis.Redis.from_url(redis_url)
    poison = make_poison()
    batch = [chaos_event("before-poison"), poison, chaos_event("after-poison")]
    path = tmp_path / "events.json"
    # ensure_ascii: the file itself is valid UTF-8 JSON; the surrogate stays escaped.
    path.write_text(json.dumps(batch))
    env = _emit_env(redis_url, chaos_catalog, tmp_path)
    result = procs.run(["emit", str(path)], env)
    stderr = result.stderr.decode()
    left = _queued(client)
    burnt = [e["id"] for e in batch if client.exists(f"{KEYS.prefix}:evt:{e['id']}")]
    report(
        f"emit-{poison['id']}",
        exit_code=result.returncode,
        traceback="Traceback" in stderr,
        ids_marked_seen=burnt,
        **left,
    )
    assert "Traceback" not in stderr, f"nurture emit crashed:\n{stderr[-3000:]}"
    assert result.returncode == 1, stderr
    assert "event 1:" in stderr, stderr
    assert left == {"event_ids": 0, "queued_messages": 0}, (
        f"a refused file left state behind: {left}; ids now refused as replays: {burnt}"
    )


# -- the in-process pipeline -------------------------------------------------------------


def _received(standin: SendGridStandIn) -> dict[str, list[str]]:
    """lead id -> steps of the chaos sequence received, in order."""
    out: dict[str, list[str]] = {}
    for message in standin.messages:
        lead, sequence, step = touch_key(message)
        if sequence == SEQUENCE:
            out.setdefault(lead, []).append(step)
    return out


def _failed_messages(h: Harness) -> int:
    """Messages dramatiq gave up on (XQ) or is retrying: a retry is a delayed message,
    waiting in the delay queue (a list) or already fetched by a worker's delay consumer
    (its id then sits in that worker's ack set for ``<queue>.DQ``)."""
    client = h.rt.store.redis
    total = 0
    for queue in (EVENTS_QUEUE, TOUCHES_QUEUE):
        total += int(client.llen(f"dramatiq:{queue}.DQ"))
        total += int(client.zcard(f"dramatiq:{queue}.XQ"))
    for key in client.scan_iter(match="dramatiq:__acks__.*.DQ", count=1000):
        total += int(client.scard(key))
    return total


def _raw(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


@pytest.mark.chaos
def test_template_raising_for_one_lead_dead_letters_that_touch_only(
    sendgrid_harness: Harness, standin: SendGridStandIn
) -> None:
    h = sendgrid_harness
    good = [f"tpl-good-{i}" for i in range(3)]
    with running(h):
        h.emit(
            *[_event(chaos_event(lead)) for lead in good[:2]],
            # `boom` is not a number: `round` raises inside chaos/first.j2 for this lead.
            _event(chaos_event("tpl-poison", attributes={"boom": "many"})),
            _event(chaos_event(good[2], email=UNICODE_EMAILS[1])),
        )
        h.settle()
        h.advance(timedelta(seconds=2))
    received = _received(standin)
    letters = h.dead_letters()
    report("render-error", received=received, dead_letters=[d["reason"] for d in letters])
    for lead in good:
        assert received.get(lead) == list(STEPS), received
    assert received.get("tpl-poison") == ["second"], received  # the step after still goes
    (letter,) = letters
    assert letter["kind"] == "touch"
    assert letter["reason"].startswith("render failed: ")
    assert "chaos/first.j2:" in letter["reason"]  # file and line
    assert "tpl-poison" in letter["payload"]["touch"]
    assert str(h.rt.store.ledger_state(letter["payload"]["touch"])).startswith("dead:")
    assert _failed_messages(h) == 0


@pytest.mark.chaos
def test_junk_on_the_events_queue_is_dead_lettered_and_the_batch_goes_on(
    sendgrid_harness: Harness, standin: SendGridStandIn
) -> None:
    """What an old or buggy producer might put on the queue, bypassing validation."""
    h = sendgrid_harness
    junk = [
        "this is not JSON",
        "[1, 2, 3]",
        _raw({"id": "junk-types", "type": TRIGGER, "lead": {"id": ["x"], "email": 5}}),
        _raw({"id": "junk-type", "type": "DROP TABLE", "lead": {"id": "x", "email": "a@b.co"}}),
        _raw(chaos_event("junk-surrogate", attributes={"note": "\ud83d"})),
        _raw({**chaos_event("junk-huge"), "data": {"blob": "é" * 2_000_000}}),
    ]
    good = ["queue-good-1", "queue-good-2", "junk-huge"]
    with running(h):
        h.rt.actors.process_events.send(
            [_raw(chaos_event("queue-good-1")), *junk, _raw(chaos_event("queue-good-2"))]
        )
        # An unknown (but well-formed) event type is not an error: nothing listens to it.
        h.rt.actors.process_events.send(
            [_raw({**chaos_event("queue-good-1"), "id": "unknown-type", "type": "x.y.z"})]
        )
        h.settle()
        h.advance(timedelta(seconds=2))
    received = _received(standin)
    letters = [d for d in h.dead_letters() if d["kind"] == "event"]
    report("queue-junk", received=sorted(received), dead_letters=[d["reason"] for d in letters])
    for lead in good:
        assert received.get(lead) == list(STEPS), received
    assert len(received) == len(good), received
    assert len(letters) == len(junk) - 1, [d["reason"] for d in letters]  # all but junk-huge
    reasons = " | ".join(d["reason"] for d in letters)
    for expected in ("lead.id", "DROP TABLE", "JSON"):
        assert expected in reasons, reasons
    assert all(d["reason"].strip() for d in letters)
    assert _failed_messages(h) == 0


@pytest.mark.chaos
def test_an_event_that_breaks_processing_does_not_hold_up_the_rest_of_its_batch(
    sendgrid_harness: Harness, standin: SendGridStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event whose processing raises (here: a bug simulated for one lead) ends as a
    dead letter and does not take the events queued after it down with it. A huge
    integer (valid JSON, beyond any float) in a fit-rule comparison is handled, not fatal."""
    h = sendgrid_harness
    original = EventProcessor._apply

    def exploding(self: EventProcessor, event: Event, record: LeadRecord | None) -> str:
        if event.lead.id == "boom-lead":
            raise RuntimeError("simulated bug while processing")
        return original(self, event, record)

    monkeypatch.setattr(EventProcessor, "_apply", exploding)
    boom = {
        "id": "boom",
        "type": "lead.created",
        "lead": {"id": "boom-lead", "email": "b@example.com"},
    }
    poison = {
        "id": "huge-budget",
        "type": "lead.created",
        "lead": {"id": "huge-lead", "email": "huge@example.com", "attributes": {"budget": 10**400}},
    }
    with running(h):
        h.emit(
            _event(chaos_event("batch-before")),
            _event(poison),
            _event(boom),
            _event(chaos_event("batch-after")),
        )
        settled = True
        try:
            h.settle(timeout=10)
            h.advance(timedelta(seconds=2))
        except Exception:  # the queue keeps retrying the whole batch
            settled = False
        received = _received(standin)
        letters = [d for d in h.dead_letters() if d["kind"] == "event"]
        report_retrying = _failed_messages(h)
        report(
            "event-crash-in-batch",
            settled=settled,
            received=received,
            dead_letters=[d["reason"] for d in letters],
            retrying=report_retrying,
        )
    assert settled and received.get("batch-after") == list(STEPS), (
        f"the event queued after the poison one was not processed: received {received}, "
        f"dead letters {[d['reason'] for d in letters]}, the whole batch message is being "
        f"retried: {report_retrying} message(s)"
    )
    assert received.get("batch-before") == list(STEPS), received
    assert [d["reason"] for d in letters] == [
        "processing failed: RuntimeError('simulated bug while processing')"
    ]
    assert '"id":"boom"' in letters[0]["payload"]["event"]
    huge = h.rt.store.get_lead("huge-lead")
    assert huge is not None and huge.disqualified is None  # 10**400 is not < 500


def _event(doc: dict[str, Any]) -> Event:
    return validate_event(doc)


# -- hypothesis: junk that passes validation, through the real pipeline ------------------

_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "true", "1e999", "-0", "NaN", "\u202e", "\ud83d", "x" * 5000])
)
_JSON = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_ATTRIBUTE_NAMES = st.sampled_from(
    ["budget", "industry", "need", "requests_guarantee", "problem", "team_size", "boom"]
) | st.text(max_size=12)
_LEAD_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "first_name": st.text(max_size=200),
        "last_name": st.text(max_size=200),
        "company": st.text(max_size=300),
        "source": st.sampled_from(["referral", "outbound", "website", "x" * 100]),
        "locale": st.sampled_from(["da", "fi", "da-DK", "en-GB", "zz", "tlh-Latn"]),
        "timezone": st.sampled_from(["Europe/Copenhagen", "Pacific/Chatham", "UTC"]),
        "attributes": st.dictionaries(_ATTRIBUTE_NAMES, _JSON, max_size=6),
    },
)
_JUNK_EVENT = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [TRIGGER, "lead.created", "lead.updated", "lead.disqualified", "deal.won", "x.y"]
        ),
        "lead": _LEAD_FIELDS,
        "email": st.sampled_from(["plain@example.com", *UNICODE_EMAILS]),
        "data": st.dictionaries(
            st.sampled_from(["reason", "referrer", "rule"]) | st.text(max_size=8),
            _JSON,
            max_size=4,
        ),
    }
)


@pytest.mark.chaos
def test_junk_attributes_and_data_never_stop_the_pipeline(
    sendgrid_harness: Harness, standin: SendGridStandIn, full_size: bool
) -> None:
    """Hypothesis-made events with junk attributes and data (wrong types, huge and odd
    numbers, odd text, unicode emails), each batch ending with a clean lead: processing
    never raises out of the actor, each junk event is processed or dead-lettered with a
    reason; then the queue workers send every touch, and each clean lead gets both."""
    h = sendgrid_harness
    numbers = count()
    outcomes = {"processed": 0, "dead_lettered": 0}
    junk_leads: list[str] = []
    clean_leads: list[str] = []

    @settings(
        max_examples=300 if full_size else 40,
        deadline=None,
        database=None,
        derandomize=not full_size,
        suppress_health_check=list(HealthCheck),
    )
    @given(junk=st.lists(_JUNK_EVENT, min_size=1, max_size=4))
    @example(
        junk=[
            {
                "type": "lead.created",
                "lead": {"attributes": {"budget": 10**400}},
                "email": "plain@example.com",
                "data": {},
            }
        ]
    )
    def check(junk: list[dict[str, Any]]) -> None:
        n = next(numbers)
        docs = []
        for i, item in enumerate(junk):
            lead = {**item["lead"], "id": f"junk-{n}-{i}", "email": item["email"]}
            docs.append(
                {"id": f"junk-{n}-{i}", "type": item["type"], "lead": lead, "data": item["data"]}
            )
        clean = f"clean-{n}"
        raws = [json.dumps(d) for d in docs] + [_raw(chaos_event(clean))]
        before = h.rt.store.dead_letter_count()
        # The actor's own function, synchronously: an exception escaping it would make
        # dramatiq retry the whole batch (and hold up the events after the bad one).
        h.rt.actors.process_events.fn(raws)
        new_letters = h.rt.store.dead_letter_count() - before
        letters = h.rt.store.dead_letters(new_letters) if new_letters else []
        for doc in docs:
            done = h.rt.store.redis.get(KEYS.event(doc["id"])) == b"done"
            reasons = [d["reason"] for d in letters if doc["id"] in d["payload"]]
            assert done or any(r.strip() for r in reasons), (
                f"{doc['id']}: neither processed nor dead-lettered with a reason"
            )
            outcomes["processed" if done else "dead_lettered"] += 1
            junk_leads.append(doc["id"])
        assert h.rt.store.enrollment(clean, SEQUENCE) is not None
        clean_leads.append(clean)

    check()
    # Now the real queue workers send everything the junk and clean events scheduled.
    with running(h):
        h.settle(timeout=60)
        h.advance(timedelta(seconds=2))
    received = _received(standin)
    touch_letters = {d["payload"]["touch"] for d in h.dead_letters() if d["kind"] == "touch"}
    report("hypothesis-junk", clean_leads=len(clean_leads), **outcomes)
    missing = [lead for lead in clean_leads if received.get(lead) != list(STEPS)]
    assert missing == [], f"clean leads without both touches: {missing[:10]}"
    for lead in junk_leads:
        enrollment = h.rt.store.enrollment(lead, SEQUENCE)
        if enrollment is None:
            continue
        assert enrollment.state in ("done", "exited"), (lead, enrollment)
        for step in enrollment.done:
            member = "\x1f".join((SEQUENCE, str(enrollment.generation), step, lead))
            got = received.get(lead, []).count(step)
            assert got == 1 or member in touch_letters, (lead, step, got)
    assert _failed_messages(h) == 0
