"""``exit_on`` with engagement conditions (issue 14, item 2): a lead who clicked what
the sequence was leading to leaves it before the next step."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.harness import Harness, event
from worker.sequences import load_catalog
from worker.sequences.engagement import fact, fields_for

INLINE_QUEUE = True

SEQUENCE = """\
id: pricing-push
trigger: lead.created
exit_on: [lead.replied, {clicked: pricing}]
steps:
  - {id: pricing, wait: 0s, template: value/guide}
  - {id: reminder, wait: 1d, template: value/testimonial}
"""


def test_a_click_ends_the_sequence_before_the_next_step(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    for path in catalog_dirs["sequences"].glob("*.yaml"):
        if path.stem not in ("fit", "decline"):
            path.unlink()
    (catalog_dirs["sequences"] / "pricing-push.yaml").write_text(SEQUENCE, encoding="utf-8")
    h = make_harness()
    h.emit(event("e1", lead_id="ann", timezone="UTC"))
    h.emit(event("e2", lead_id="bob", email="bob@example.com", timezone="UTC"))
    h.settle()
    h.advance(timedelta(seconds=1))
    # What the Event Webhook records when Ann clicks the pricing email's link.
    clicked = fields_for("pricing-push", 1, [fact("clicked", "pricing", "pricing-push")])
    h.rt.store.engagement.record("ann", clicked, h.clock.now().timestamp())
    h.advance(timedelta(days=1, seconds=1))
    assert sorted((lead, step) for lead, _seq, step in h.sent()) == [
        ("ann", "pricing"),
        ("bob", "pricing"),
        ("bob", "reminder"),
    ]
    enrollment = h.rt.store.enrollment("ann", "pricing-push")
    assert enrollment is not None
    assert (enrollment.state, enrollment.reason) == ("exited", "exit_on:condition")


def test_validate_checks_exit_on_conditions(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        SEQUENCE.replace("{clicked: pricing}", "{clicked: pricng}, {budget: {lt: 5}}"),
        encoding="utf-8",
    )
    _, problems = load_catalog(tmp_path)
    text = [f"{p.line}: {p.message} — {p.fix}" for p in problems]
    assert any(t.startswith("3: clicked: 'pricng' names no step") for t in text), text
    assert any("did you mean `pricing`?" in t for t in text), text
    assert any(t.startswith("3: unknown field 'budget'") for t in text), text
