"""Enroll on match (issue 14, item 1): a lead whose CRM data comes to match later
enrolls once, whatever event changed it; ``reenroll`` says when it may enroll again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.harness import Harness, event
from worker.sequences import load_catalog

INLINE_QUEUE = True

SEQUENCE = """\
id: budget-known
trigger:
  match: {attributes.budget: {gte: 1000}}
%s
steps:
  - {id: hello, wait: 0s, template: value/guide}
"""


def setup(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path], reenroll: str = ""
) -> Harness:
    (catalog_dirs["sequences"] / "budget-known.yaml").write_text(
        SEQUENCE % reenroll, encoding="utf-8"
    )
    return make_harness()


def sent(h: Harness) -> list[str]:
    return [step for (_lead, seq, step) in h.sent() if seq == "budget-known"]


def update(h: Harness, event_id: str, **attributes: object) -> None:
    h.emit(event(event_id, "lead.updated", email=None, attributes=attributes))
    h.settle()
    h.advance(timedelta(seconds=1))


def test_budget_filled_in_later_enrolls_once(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    h = setup(make_harness, catalog_dirs)
    h.emit(event("e1", first_name="Ann", timezone="UTC", source="outbound"))
    h.settle()
    h.advance(timedelta(seconds=1))
    assert h.rt.store.enrollment("lead-1", "budget-known") is None
    update(h, "e2", industry="saas")  # an update that does not make it match
    assert sent(h) == []
    update(h, "e3", budget=5000)  # the budget is filled in: the lead comes to match
    assert sent(h) == ["hello"]
    update(h, "e4", budget=6000)  # still matching: not again
    h.emit(event("e5", "webinar.attended", email=None))  # any event type
    h.settle()
    h.advance(timedelta(days=200))
    update(h, "e6", budget=7000)  # reenroll: never (the default)
    assert sent(h) == ["hello"]
    enrollment = h.rt.store.enrollment("lead-1", "budget-known")
    assert enrollment is not None and enrollment.generation == 1


def test_reenroll_after_a_time(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    h = setup(make_harness, catalog_dirs, "reenroll: {after: 90d}")
    h.emit(event("e1", timezone="UTC", source="outbound", attributes={"budget": 2000}))
    h.settle()
    h.advance(timedelta(seconds=1))
    assert sent(h) == ["hello"]  # matching at creation: enrolls right away
    h.advance(timedelta(days=89))
    update(h, "e2", budget=3000)
    assert sent(h) == ["hello"]
    h.advance(timedelta(days=2))
    update(h, "e3", budget=3000)
    assert sent(h) == ["hello", "hello"]
    enrollment = h.rt.store.enrollment("lead-1", "budget-known")
    assert enrollment is not None and enrollment.generation == 2


def test_reenroll_when_a_field_changes(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    h = setup(make_harness, catalog_dirs, "reenroll: {when_changes: attributes.lifecycle}")
    h.emit(event("e1", timezone="UTC", source="outbound", attributes={"lifecycle": "lead"}))
    h.settle()
    update(h, "e2", budget=2000)
    update(h, "e3", budget=2500)
    assert sent(h) == ["hello"]
    update(h, "e4", lifecycle="mql")
    assert sent(h) == ["hello", "hello"]
    update(h, "e5", lifecycle="mql")
    assert sent(h) == ["hello", "hello"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "trigger:\n  event: lead.created\n  match: {source: web}\n",
            "3: a trigger with match cannot also have event",
        ),
        (
            "trigger:\n  match: {source: web}\nreenroll: {aftr: 90d}\n",
            "4: unknown reenroll key 'aftr' — did you mean `after`?",
        ),
        ("trigger: lead.created\nreenroll: never\n", "3: reenroll only applies to"),
        (
            "trigger:\n  match: {source: web}\nreenroll: {when_changes: budget}\n",
            "4: reenroll when_changes 'budget' is not a field",
        ),
    ],
)
def test_validate_match_and_reenroll(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "m.yaml").write_text(
        "id: m\n" + text + "steps:\n  - {id: a, wait: 0s, template: value/guide}\n",
        encoding="utf-8",
    )
    _, problems = load_catalog(tmp_path)
    lines = [f"{p.line}: {p.message} — {p.fix}" for p in problems]
    assert any(line.startswith(expected) for line in lines), lines
