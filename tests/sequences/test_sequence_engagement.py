"""Engagement conditions (issue 14, item 2): compiling, checking and evaluating
``clicked`` / ``opened`` / ``clicked_content`` / ``clicked_tag`` / ``replied``."""

from __future__ import annotations

import textwrap
from pathlib import Path

from worker.content import ContentItem, ContentLibrary
from worker.sequences import load_catalog
from worker.sequences.conditions import condition_context
from worker.sequences.engagement import ENGAGEMENT, Engagement, fact, fields_for

HEAD = """\
id: branchy
trigger: lead.created
steps:
  - id: case-study
    wait: 0s
    template: value/case_study
"""


def load(tmp_path: Path, steps: str) -> tuple[object, list[str]]:
    (tmp_path / "branchy.yaml").write_text(
        HEAD + textwrap.indent(textwrap.dedent(steps), "  "), encoding="utf-8"
    )
    catalog, problems = load_catalog(tmp_path)
    return catalog.sequences.get("branchy"), [f"{p.line}: {p.message} — {p.fix}" for p in problems]


def engagement(*facts: str, generation: int = 1, replied: float | None = None) -> Engagement:
    recorded = dict.fromkeys(fields_for("branchy", generation, facts), 1.0)
    return Engagement.from_fields("branchy", 1, recorded, replied, started=100.0)


def test_branches_on_a_click_in_this_enrollment(tmp_path: Path) -> None:
    sequence, problems = load(
        tmp_path,
        """\
          - id: for-clickers
            wait: 1d
            template: value/guide
            when: {clicked: case-study}
          - id: for-others
            wait: 1d
            template: value/guide
            when: {not: {clicked: case-study}}
          - id: came-back
            wait: 1d
            template: value/guide
            when: {clicked: case-study, scope: any}
        """,
    )
    assert problems == []
    clickers, others, came_back = sequence.steps[1:]  # type: ignore[attr-defined]
    ctx = condition_context({}, {})
    ctx[ENGAGEMENT] = engagement(fact("clicked", "case-study", "branchy"))
    assert clickers.when.matches(ctx) and not others.when.matches(ctx)
    # A click in an earlier enrollment counts only with `scope: any`.
    ctx[ENGAGEMENT] = engagement(fact("clicked", "case-study", "branchy"), generation=0)
    assert not clickers.when.matches(ctx) and others.when.matches(ctx)
    assert came_back.when.matches(ctx)
    assert clickers.when.describe() == "clicked step 'case-study'"


def test_content_tag_and_reply_conditions() -> None:
    from worker.sequences.conditions import compile_when

    def when(node: dict[str, object]) -> object:
        condition, problems = compile_when(node, "f.yaml", 3, lambda n, k, d: d)
        assert problems == []
        return condition

    ctx = condition_context({}, {})
    ctx[ENGAGEMENT] = engagement(
        fact("clicked_content", "saas-churn"), fact("clicked_tag", "Churn"), replied=150.0
    )
    assert when({"clicked_content": "saas-churn"}).matches(ctx)  # type: ignore[attr-defined]
    assert when({"clicked_tag": "churn"}).matches(ctx)  # type: ignore[attr-defined]
    assert when({"replied": True}).matches(ctx)  # type: ignore[attr-defined]
    assert not when({"replied": False}).matches(ctx)  # type: ignore[attr-defined]
    # A reply before this enrollment started counts only with scope any.
    ctx[ENGAGEMENT] = engagement(replied=50.0)
    assert not when({"replied": True}).matches(ctx)  # type: ignore[attr-defined]
    assert when({"replied": True, "scope": "any"}).matches(ctx)  # type: ignore[attr-defined]
    # Without recorded engagement (a preview) nothing was clicked.
    assert not when({"clicked_tag": "churn"}).matches(condition_context({}, {}))  # type: ignore[attr-defined]


def test_validate_names_unknown_and_later_steps_with_file_and_line(tmp_path: Path) -> None:
    _, problems = load(
        tmp_path,
        """\
          - id: follow-up
            wait: 1d
            template: value/guide
            when: {clicked: case-stdy}
          - id: early
            wait: 1d
            template: value/guide
            when: {opened: last}
          - id: last
            wait: 1d
            template: value/guide
            when: {clickd: case-study, scope: al}
        """,
    )
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "10: clicked: 'case-stdy' names no step" in text
    assert "did you mean `case-study`?" in text
    assert "14: opened: 'last' is this step or a later one" in text
    assert "18: unknown scope 'al' — did you mean `any`?" in text
    assert "18: unknown field 'clickd' — did you mean clicked?" in text


def test_trigger_cannot_look_at_its_own_steps(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "id: t\ntrigger:\n  event: lead.created\n  when: {clicked: a}\n"
        "steps:\n  - {id: a, wait: 0s, template: value/guide}\n",
        encoding="utf-8",
    )
    _, problems = load_catalog(tmp_path)
    assert [(p.line, "trigger's when cannot use clicked" in p.message) for p in problems] == [
        (4, True)
    ]


def test_content_prefers_tags_the_lead_clicked() -> None:
    def piece(id_: str, problem: str) -> ContentItem:
        return ContentItem(
            id=id_,
            kind="case_study",
            title=id_,
            summary="s",
            outcome="o",
            url=f"https://example.com/{id_}",
            tags={"problem": (problem,)},
        )

    library = ContentLibrary([piece("a-pricing", "pricing"), piece("b-churn", "churn")])
    lead: dict[str, object] = {"attributes": {}}
    assert library.pick("case_study", lead, "en", frozenset()).id == "a-pricing"  # type: ignore[union-attr]
    chosen = library.pick("case_study", lead, "en", frozenset(), preferred=frozenset({"churn"}))
    assert chosen is not None and chosen.id == "b-churn"
    assert [p.id for p in library.by_url("https://EXAMPLE.com/b-churn/?utm=x#top")] == ["b-churn"]


def test_preview_shows_the_branches(make_settings, catalog_dirs) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from worker.preview import preview

    (catalog_dirs["sequences"] / "branchy.yaml").write_text(
        HEAD
        + "  - {id: for-clickers, wait: 1d, template: value/guide, when: {clicked: case-study}}\n"
        + "  - id: for-others\n    wait: 0s\n    template: value/testimonial\n"
        + "    when: {not: {clicked: case-study}}\n",
        encoding="utf-8",
    )
    text = preview(
        make_settings(),
        "branchy",
        {"id": "l1", "email": "ann@example.com", "timezone": "UTC"},
        datetime(2026, 11, 30, 9, tzinfo=UTC),
        None,
    )
    assert "Tue 2026-12-01 09:00 UTC  for-clickers" in text
    assert "branch: only if clicked step 'case-study'" in text
    assert "Tue 2026-12-01 09:00 UTC  for-others" in text
    assert "branch: only if not clicked step 'case-study'" in text
