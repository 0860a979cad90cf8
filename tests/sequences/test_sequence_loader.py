"""Loading sequences and fit rules: the shipped files, and every mistake a marketer makes."""

from __future__ import annotations

import io
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from worker.errors import CatalogError, Problem
from worker.sequences import load_catalog, require_catalog
from worker.sequences.conditions import condition_context

SHIPPED = Path(__file__).resolve().parents[2] / "sequences"

VALID = """\
id: demo
trigger:
  event: lead.created
exit_on: [lead.replied]
send_window: {days: mon-fri, hours: "09:00-17:00"}
steps:
  - id: first
    wait: 10m
    template: value/outcome_story
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def only_problem(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(str(p) for p in problems)
    return problems[0]


# -- the shipped examples --------------------------------------------------------------


def test_shipped_sequences_load_without_problems() -> None:
    catalog, problems = load_catalog(SHIPPED)
    assert problems == []
    assert sorted(catalog.sequences) == [
        "decline",
        "keep-giving",
        "outbound-intro",
        "quick-start",
        "referral-intro",
        "value-first",
    ]
    assert len(catalog.version) == 12


def test_shipped_value_first() -> None:
    catalog = require_catalog(SHIPPED)
    seq = catalog.sequences["value-first"]
    assert seq.kind == "nurture" and seq.trigger_event == "lead.created"
    assert seq.exit_on == {"lead.replied", "meeting.booked", "deal.won", "deal.lost"}
    assert [(s.id, str(s.wait), s.template) for s in seq.steps] == [
        ("outcome-story", "10m", "value/outcome_story"),
        ("case-study", "3 business days", "value/case_study"),
        ("testimonial", "4 business days", "value/testimonial"),
        ("how-to-guide", "5 business days", "value/guide"),
    ]
    assert str(seq.send_window) == "mon,tue,wed,thu,fri 09:00-17:00"
    assert seq.trigger_when is not None
    inbound = condition_context({"source": "web"}, {})
    assert seq.trigger_when.matches(inbound)
    assert not seq.trigger_when.matches(condition_context({"source": "referral"}, {}))
    assert not seq.trigger_when.matches(condition_context({}, {"referrer": {"name": "Ole"}}))
    assert seq.index_of("testimonial") == 2 and seq.step("nope") is None
    assert seq.next_step("outcome-story") is seq.steps[1] and seq.next_step("how-to-guide") is None


@pytest.mark.parametrize(
    ("lead", "data", "value_first", "referral", "outbound"),
    [
        ({"source": "web"}, {}, True, False, False),
        ({}, {}, True, False, False),  # no source at all: inbound
        ({"source": "referral"}, {}, False, True, False),
        ({"source": "web"}, {"referrer": {"name": "Ole"}}, False, True, False),
        ({"source": "outbound"}, {}, False, False, True),
    ],
)
def test_shipped_triggers_route_each_lead_to_one_sequence(
    lead: dict[str, object],
    data: dict[str, object],
    value_first: bool,
    referral: bool,
    outbound: bool,
) -> None:
    """One active sequence per lead; keep-giving follows for everyone but outbound."""
    catalog = require_catalog(SHIPPED)
    ctx = condition_context(lead, data)
    matched = {
        s.id
        for s in catalog.triggered_by("lead.created")
        if s.trigger_when is None or s.trigger_when.matches(ctx)
    }
    expected = {
        name
        for name, hit in [
            ("value-first", value_first),
            ("referral-intro", referral),
            ("outbound-intro", outbound),
            ("keep-giving", not outbound),
        ]
        if hit
    }
    assert matched == expected


def test_shipped_referral_steps_pick_intro_by_relationship() -> None:
    """Only a strong relationship gets the warm intro (article 002); weak, unknown,
    free text and none get the careful one. Both wait for the referrer."""
    seq = require_catalog(SHIPPED).sequences["referral-intro"]
    weak, warm = seq.step("intro-weak"), seq.step("intro")
    assert weak is not None and warm is not None and weak.when and warm.when
    assert str(weak.wait) == str(warm.wait) == "2 business days"
    cases: list[tuple[object, bool]] = [
        ("weak", True),
        ("strong", False),
        ("close", False),
        (None, True),
        ("client", True),
        ("met once at a conference", True),
        ({"role": "colleague", "strength": "strong"}, False),
        ({"role": "friend", "strength": "weak"}, True),
        ({"role": "our_client"}, True),
    ]
    for relationship, expect_weak in cases:
        referrer: dict[str, object] = {"name": "Ole"}
        if relationship is not None:
            referrer["relationship"] = relationship
        ctx = condition_context({"source": "referral"}, {"referrer": referrer})
        assert weak.when.matches(ctx) is expect_weak, relationship
        assert warm.when.matches(ctx) is not expect_weak, relationship


def test_shipped_decline() -> None:
    catalog = require_catalog(SHIPPED)
    decline = catalog.sequences["decline"]
    assert (
        decline.kind == "decline" and decline.description == "Polite refusal package (article 003)"
    )
    assert catalog.decline_sequences == [decline]
    assert catalog.triggered_by("lead.disqualified") == [decline]
    assert decline.exit_on == frozenset()
    (refusal,) = decline.steps
    assert refusal.template == "decline/refusal" and str(refusal.wait) == "2-20h"


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"requests_guarantee": True}, "guarantee"),
        ({"need": "legal"}, "out_of_scope"),
        ({"already_helped": True}, "already_helped"),
        ({"pushed_by_third_party": True}, "third_party"),
        ({"ethics_flag": True}, "ethics"),
        ({"demands_after_hours": True}, "boundaries"),
        ({"budget": 300}, "budget"),
        ({"budget": "300"}, "budget"),
        ({"budget": 800, "need": "websites"}, None),
        ({}, None),
    ],
)
def test_shipped_fit_rules(attributes: dict[str, object], reason: str | None) -> None:
    catalog = require_catalog(SHIPPED)
    assert len(catalog.fit_rules) == 7
    ctx = condition_context({"attributes": attributes}, {})
    first = next((r.reason for r in catalog.fit_rules if r.when.matches(ctx)), None)
    assert first == reason


def test_event_types_cover_triggers_and_exits() -> None:
    catalog = require_catalog(SHIPPED)
    assert catalog.event_types == {
        "lead.created",
        "lead.disqualified",
        "lead.replied",
        "meeting.booked",
        "deal.won",
        "deal.lost",
    }
    assert [s.id for s in catalog.triggered_by("lead.created")] == [
        "keep-giving",
        "outbound-intro",
        "quick-start",
        "referral-intro",
        "value-first",
    ]
    assert catalog.triggered_by("deal.won") == []


# -- one mistake per snippet: exact line, message and fix ------------------------------

# fmt: off
MISTAKES = [
    # (name, yaml, line, in message, in fix)
    ("colon in text", """\
        id: demo
        description: Note: this breaks
        trigger: {event: lead.created}
        steps: [{id: a, wait: 1h, template: a}]
        """, 2, "':'", "quotes"),
    ("tab indentation", "id: demo\ntrigger:\n\tevent: lead.created\n", 3, "tab", "spaces"),
    ("duplicate key", """\
        id: demo
        trigger: {event: lead.created}
        steps: [{id: a, wait: 1h, template: a}]
        id: other
        """, 4, "'id' appears twice", "keep only one; the other is at line 1"),
    ("nested duplicate key", VALID + "  - id: second\n    wait: 1d\n    template: a\n"
     "    wait: 2d\n", 13, "'wait' appears twice", "the other is at line 11"),
    ("two documents", """\
        id: demo
        ---
        id: other
        """, 2, "more than one document", "one sequence per file"),
    ("unclosed brace", """\
        id: demo
        trigger: {event: lead.created
        steps: [{id: a, wait: 1h, template: a}]
        """, 3, "not closed", "matching }"),
    ("not a mapping", "- id: demo\n- id: other\n", 1, "a list, not a sequence", "id: my-sequence"),
    ("empty file", "# nothing yet\n", 1, "the file is empty", "id: my-sequence"),
    ("missing id", """\
        description: no id here
        trigger: {event: lead.created}
        steps: [{id: a, wait: 1h, template: a}]
        """, 1, "no `id`", "id: my-sequence"),
    ("bad id", """\
        description: x
        id: Value First
        trigger: {event: lead.created}
        steps: [{id: a, wait: 1h, template: a}]
        """, 2, "'Value First'", "id: value-first"),
    ("missing trigger", """\
        id: demo
        steps: [{id: a, wait: 1h, template: a}]
        """, 1, "no `trigger`", "trigger: {event: lead.created}"),
    ("missing steps", """\
        id: demo
        trigger: {event: lead.created}
        """, 1, "no `steps`", "steps:"),
    ("exit-on", VALID.replace("exit_on:", "exit-on:"), 4, "unknown key 'exit-on'", "`exit_on`"),
    ("unknown key far off", VALID + "colour: red\n", 10, "unknown key 'colour'", "remove it"),
    ("when at top level", VALID + "when: {source: web}\n", 10, "unknown key 'when'",
     "belongs under `trigger:`"),
    ("wiat", VALID.replace("wait:", "wiat:"), 8, "unknown key 'wiat'", "`wait`"),
    ("tempalte", VALID.replace("template:", "tempalte:"), 9, "unknown key 'tempalte'",
     "`template`"),
    ("trigger not dotted", VALID.replace("event: lead.created", "event: Lead Created"), 3,
     "'Lead Created' is not an event type", "did you mean lead.created?"),
    ("trigger typo", VALID.replace("event: lead.created", "event: lead.crated"), 3,
     "looks like a typo of lead.created", "write lead.created"),
    ("trigger without event", VALID.replace("  event: lead.created", "  evnt: lead.created"), 3,
     "unknown key 'evnt'", "`event`"),
    ("exit_on not a list", VALID.replace("[lead.replied]", "lead.replied"), 4,
     "exit_on must be a list", "exit_on: [lead.replied]"),
    ("exit_on bad name", VALID.replace("[lead.replied]", "[lead.replied, Meeting Booked]"), 4,
     "'Meeting Booked' is not an event type", "meeting.booked"),
    ("exit_on trigger", VALID.replace("[lead.replied]", "\n  - lead.replied\n  - lead.created"),
     6, "lists the trigger event lead.created", "remove lead.created"),
    ("empty steps", VALID.split("steps:")[0] + "steps: []\n", 6, "steps is empty",
     "at least one step"),
    ("steps not a list", VALID.split("steps:")[0] + "steps: send the guide\n", 6,
     "steps must be a list", "- id:"),
    ("step not a mapping", VALID + "  - send the guide\n", 10, "a step must be a set of keys",
     "- id: intro"),
    ("duplicate step ids", VALID + "  - id: first\n    wait: 1d\n    template: value/guide\n",
     10, "step id 'first' is used twice", "the other is at line 7"),
    ("bad step id", VALID.replace("id: first", "id: First Step"), 7, "'First Step'",
     "id: first-step"),
    ("missing template", VALID.replace("    template: value/outcome_story\n", ""), 7,
     "no `template`", "template: value/case_study"),
    ("bad wait", VALID.replace("wait: 10m", "wait: 10 parsecs"), 8, "unknown unit 'parsecs'",
     "3 business days"),
    ("wait in weeks", VALID.replace("wait: 10m", "wait: 2 weeks"), 8, "'weeks' is not a unit",
     "14d or 10 business days"),
    ("wait without unit", VALID.replace("wait: 10m", "wait: 10"), 8, "has no unit", "10m"),
    ("bad window days", VALID.replace("mon-fri", "mon-fry"), 5, "'fry' is not a weekday",
     "mon,wed,fri"),
    ("bad window hours", VALID.replace('"09:00-17:00"', "9am-5pm"), 5, "is not a time",
     '"09:00-17:00"'),
    ("window not a mapping", VALID.replace('{days: mon-fri, hours: "09:00-17:00"}', "weekdays"),
     5, "send_window must give days and hours", "days: mon-fri"),
    ("window unknown key", VALID.replace("{days: mon-fri", "{day: mon-fri"), 5,
     "unknown key 'day'", "`days`"),
    ("unknown operator", VALID.replace("  event: lead.created\n",
     "  event: lead.created\n  when:\n    attributes.budget: {gtee: 1000}\n"), 5,
     "unknown operator 'gtee'", "did you mean gte?"),
    ("in needs a list", VALID.replace("  event: lead.created\n",
     "  event: lead.created\n  when:\n    source: {in: referral}\n"), 5, "in needs a list",
     "in: [saas, agency]"),
    ("exists needs bool", VALID.replace("  event: lead.created\n",
     "  event: lead.created\n  when:\n    data.referrer: {exists: yes}\n"), 5,
     "exists needs true or false", "exists: false"),
    ("lt needs number", VALID.replace("  event: lead.created\n",
     "  event: lead.created\n  when:\n    attributes.budget: {lt: 500 EUR}\n"), 5,
     "lt needs a number", "lt: 500"),
    ("unknown path", VALID.replace("  event: lead.created\n",
     "  event: lead.created\n  when:\n    budget: {lt: 500}\n"), 5, "unknown field 'budget'",
     "did you mean attributes.budget?"),
    ("when not a mapping", VALID.replace("    template: value/outcome_story\n",
     "    template: value/outcome_story\n    when: saas\n"), 10, "must be a list of conditions",
     "attributes.industry: saas"),
    ("when empty", VALID.replace("    template: value/outcome_story\n",
     "    template: value/outcome_story\n    when:\n"), 10, "is empty", "remove the line"),
    ("nested operator in combinator", VALID.replace("  event: lead.created\n",
     "  event: lead.created\n  when:\n    any:\n      - {source: referral}\n"
     "      - {data.referrer: {exist: true}}\n"), 7, "unknown operator 'exist'", "exists"),
    ("template .j2", VALID.replace("value/outcome_story", "value/outcome_story.j2"), 9,
     "leave out .j2", "template: value/outcome_story`"),
    ("template leading slash", VALID.replace("value/outcome_story", "/value/outcome_story"), 9,
     "without a leading /", "template: value/outcome_story`"),
    ("template dot dot", VALID.replace("value/outcome_story", "../value/outcome_story"), 9,
     "cannot leave the templates folder", "template: value/outcome_story`"),
    ("template with spaces", VALID.replace("value/outcome_story", "value/outcome story"), 9,
     "letters, digits", "template: value/outcome_story`"),
    ("kind unknown", VALID + "kind: nurturing\n", 10, "kind 'nurturing' is not known",
     "did you mean nurture?"),
    ("kind decline wrong trigger", VALID + "kind: decline\n", 10,
     "must start on lead.disqualified", "event: lead.disqualified"),
    ("disqualified but nurture", VALID.replace("lead.created", "lead.disqualified")
     + "kind: nurture\n", 10, "always a decline", "remove the kind line"),
    ("decline exits on itself", VALID.replace("lead.created", "lead.disqualified").replace(
     "[lead.replied]", "[lead.disqualified]"), 4, "cancel the refusal", "remove lead.disqualified"),
    ("description not text", VALID + "description: [a, b]\n", 10, "description must be text",
     "quotes"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "line", "message", "fix"),
    [pytest.param(*case[1:], id=case[0]) for case in MISTAKES],
)
def test_mistake_is_reported_at_its_line(
    tmp_path: Path, text: str, line: int, message: str, fix: str
) -> None:
    path = write(tmp_path, "demo.yaml", text)
    catalog, problems = load_catalog(tmp_path)
    problem = only_problem(problems)
    assert problem.file.endswith("demo.yaml") and Path(problem.file).name == path.name
    assert problem.line == line, str(problem)
    assert message in problem.message, str(problem)
    assert fix in problem.fix, str(problem)
    assert "demo" not in catalog.sequences  # a sequence with a problem is left out


def test_valid_base_snippet_loads(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID)
    catalog, problems = load_catalog(tmp_path)
    assert problems == []
    assert catalog.sequences["demo"].steps[0].line == 7
    assert catalog.sequences["demo"].line == 1


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "demo.yaml",
        """\
        id: Demo
        exit-on: [lead.replied]
        trigger:
          event: lead.created
          when: {budget: {gtee: 5}}
        steps:
          - id: a
            wiat: 10m
            template: a.j2
          - id: a
            wait: 10
            template: b
        """,
    )
    _, problems = load_catalog(tmp_path)
    assert [(p.line, p.message.split(" ")[0]) for p in problems] == [
        (1, "the"),  # bad id
        (2, "unknown"),  # exit-on
        (5, "unknown"),  # budget
        (8, "unknown"),  # wiat (no extra "missing wait")
        (9, "template"),  # .j2
        (10, "step"),  # duplicate id
        (11, "10"),  # wait without unit
    ]
    assert all(p.fix for p in problems)


def test_problem_str_names_file_line_and_fix(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID.replace("wait:", "wiat:"))
    _, problems = load_catalog(tmp_path)
    text = str(only_problem(problems))
    assert text.endswith(
        "demo.yaml:8: unknown key 'wiat' in this step — did you mean `wait`? "
        "Keys allowed here: id, description, wait, template, notify, webhook, when, variants, "
        "winner, needs_content"
    )


def test_needs_content_is_true_or_false(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID.replace("wait:", "needs_content: often\n    wait:", 1))
    _, problems = load_catalog(tmp_path)
    problem = only_problem(problems)
    assert "needs_content must be true or false" in str(problem) and problem.fix


# -- fit rules ---------------------------------------------------------------------------

# fmt: off
FIT_MISTAKES = [
    ("missing reason", """\
        rules:
          - id: cannot-pay
            when: {attributes.budget: {lt: 500}}
        """, 2, "no `reason`", "reason: budget"),
    ("bad reason", """\
        rules:
          - id: cannot-pay
            when: {attributes.budget: {lt: 500}}
            reason: Too Poor
        """, 4, "reason 'Too Poor' must be a short id", "reason: too_poor"),
    ("duplicate rule ids", """\
        rules:
          - id: cannot-pay
            when: {attributes.budget: {lt: 500}}
            reason: budget
          - id: cannot-pay
            when: {attributes.budget: {lt: 100}}
            reason: budget
        """, 5, "rule id 'cannot-pay' is used twice", "line 2"),
    ("unknown rule key", """\
        rules:
          - id: cannot-pay
            when: {attributes.budget: {lt: 500}}
            reason: budget
            priority: 1
        """, 5, "unknown key 'priority' in this rule", "id, description, when, reason"),
    ("misspelt reason key", """\
        rules:
          - id: cannot-pay
            when: {attributes.budget: {lt: 500}}
            resaon: budget
        """, 4, "unknown key 'resaon'", "`reason`"),
    ("unknown top-level key", """\
        rule:
          - id: cannot-pay
        """, 1, "unknown key 'rule' in this fit file", "`rules`"),
    ("rules not a list", "rules: {id: x}\n", 1, "rules must be a list", "- id:"),
    ("file is a list", """\
        - id: cannot-pay
          when: {attributes.budget: {lt: 500}}
          reason: budget
        """, 1, "must start with `rules:`", "rules:"),
    ("missing when", """\
        rules:
          - id: cannot-pay
            reason: budget
        """, 2, "no `when`", "when: {attributes.budget: {lt: 500}}"),
    ("bad operator in rule", """\
        rules:
          - id: cannot-pay
            reason: budget
            when:
              attributes.budget: {less_than: 500}
        """, 5, "unknown operator 'less_than'", "did you mean lt?"),
    ("empty when", """\
        rules:
          - id: everybody
            reason: budget
            when: {}
        """, 4, "would match every lead", "add a condition"),
    ("bad rule id", """\
        rules:
          - id: Cannot Pay
            when: {attributes.budget: {lt: 500}}
            reason: budget
        """, 2, "'Cannot Pay'", "id: cannot-pay"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "line", "message", "fix"),
    [pytest.param(*case[1:], id=case[0]) for case in FIT_MISTAKES],
)
def test_fit_mistake_is_reported_at_its_line(
    tmp_path: Path, text: str, line: int, message: str, fix: str
) -> None:
    write(tmp_path, "demo.yaml", VALID)
    write(tmp_path, "fit.yaml", text)
    catalog, problems = load_catalog(tmp_path)
    problem = only_problem(problems)
    assert Path(problem.file).name == "fit.yaml"
    assert problem.line == line, str(problem)
    assert message in problem.message, str(problem)
    assert fix in problem.fix, str(problem)
    assert "demo" in catalog.sequences  # a fit mistake does not hide the sequences


def test_good_fit_rules_survive_a_bad_neighbour(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID)
    write(
        tmp_path,
        "fit.yaml",
        """\
        rules:
          - id: wants-guarantee
            when: {attributes.requests_guarantee: true}
            reason: guarantee
          - id: broken
            when: {budget: 5}
            reason: budget
          - id: cannot-pay
            when: {attributes.budget: {lt: 500}}
            reason: budget
        """,
    )
    catalog, problems = load_catalog(tmp_path)
    assert [p.line for p in problems] == [6]
    assert [(r.id, r.reason, r.line) for r in catalog.fit_rules] == [
        ("wants-guarantee", "guarantee", 2),
        ("cannot-pay", "budget", 8),
    ]


def test_fit_file_with_only_comments_means_no_rules(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID)
    write(tmp_path, "fit.yaml", "# no rules yet\n")
    catalog, problems = load_catalog(tmp_path)
    assert problems == [] and catalog.fit_rules == ()


def test_two_fit_files(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID)
    write(tmp_path, "fit.yaml", "rules: []\n")
    write(tmp_path, "fit.yml", "rules: []\n")
    _, problems = load_catalog(tmp_path)
    problem = only_problem(problems)
    assert Path(problem.file).name == "fit.yml" and "two fit rule files" in problem.message


# -- across files ------------------------------------------------------------------------


def test_duplicate_sequence_ids_name_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a-first.yaml", VALID)
    write(tmp_path, "b-second.yaml", "# copy\n" + VALID)
    catalog, problems = load_catalog(tmp_path)
    problem = only_problem(problems)
    assert Path(problem.file).name == "b-second.yaml" and problem.line == 2
    assert "already used by" in problem.message and "a-first.yaml (line 1)" in problem.message
    assert catalog.sequences["demo"].file.endswith("a-first.yaml")


def test_duplicate_id_is_reported_even_when_the_copy_has_other_problems(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID.replace("wait: 10m", "wait: soon"))
    _, problems = load_catalog(tmp_path)
    assert sorted((Path(p.file).name, p.line) for p in problems) == [("b.yaml", 1), ("b.yaml", 8)]


def test_clean_sequences_load_beside_broken_ones(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", VALID)
    write(tmp_path, "broken.yaml", "id: broken\ntrigger: {event: lead.created}\nsteps: [x]\n")
    write(tmp_path, "syntax.yml", "id: [unclosed\n")
    catalog, problems = load_catalog(tmp_path)
    assert list(catalog.sequences) == ["demo"]
    assert sorted(Path(p.file).name for p in problems) == ["broken.yaml", "syntax.yml"]
    with pytest.raises(CatalogError) as caught:
        require_catalog(tmp_path)
    assert len(caught.value.problems) == 2


def test_yml_files_are_read_and_other_files_ignored(tmp_path: Path) -> None:
    write(tmp_path, "demo.yml", VALID)
    write(tmp_path, "notes.txt", "not yaml: [")
    write(tmp_path, ".#demo.yaml", "garbage: [")  # editor lock file
    catalog, problems = load_catalog(tmp_path)
    assert problems == [] and list(catalog.sequences) == ["demo"]


def test_file_name_need_not_match_id(tmp_path: Path) -> None:
    write(tmp_path, "whatever.yaml", VALID)
    catalog, problems = load_catalog(tmp_path)
    assert problems == [] and "demo" in catalog.sequences


def test_missing_folder(tmp_path: Path) -> None:
    catalog, problems = load_catalog(tmp_path / "nope")
    problem = only_problem(problems)
    assert problem.line == 0 and "does not exist" in problem.message
    assert "NURTURE_SEQUENCES_DIR" in problem.fix
    assert catalog.sequences == {}


def test_folder_without_sequences(tmp_path: Path) -> None:
    write(tmp_path, "fit.yaml", "rules: []\n")
    _, problems = load_catalog(tmp_path)
    assert "no sequence files" in only_problem(problems).message


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_bytes(b"id: demo\ndescription: caf\xe9\n")
    _, problems = load_catalog(tmp_path)
    problem = only_problem(problems)
    assert problem.line == 2 and "UTF-8" in problem.message


def test_version_changes_with_any_file(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID)
    first = load_catalog(tmp_path)[0].version
    assert load_catalog(tmp_path)[0].version == first
    write(tmp_path, "fit.yaml", "rules: []\n")
    second = load_catalog(tmp_path)[0].version
    write(tmp_path, "demo.yaml", VALID.replace("10m", "11m"))
    third = load_catalog(tmp_path)[0].version
    assert len({first, second, third}) == 3


def test_kind_defaults_and_transactional(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID.replace("id: demo", "id: receipt") + "kind: transactional\n")
    write(
        tmp_path,
        "c.yaml",
        VALID.replace("id: demo", "id: no").replace("lead.created", "lead.disqualified"),
    )
    catalog, problems = load_catalog(tmp_path)
    assert problems == []
    assert {k: s.kind for k, s in catalog.sequences.items()} == {
        "demo": "nurture",
        "receipt": "transactional",
        "no": "decline",
    }


def test_friendly_forms(tmp_path: Path) -> None:
    write(
        tmp_path,
        "demo.yaml",
        """\
        id: demo
        trigger: lead.created          # shorthand for {event: lead.created}
        send_window:
          days: [monday, wednesday]
        steps:
          - id: first
            wait: 2 - 4 hours
            template: value/outcome_story
            when:
              not: {attributes.industry: {in: [retail]}}
        """,
    )
    catalog, problems = load_catalog(tmp_path)
    assert problems == []
    seq = catalog.sequences["demo"]
    assert seq.trigger_event == "lead.created" and seq.trigger_when is None
    assert str(seq.send_window) == "mon,wed 00:00-24:00"
    assert str(seq.steps[0].wait) == "2-4h"


def test_loading_the_shipped_folder_copy_is_stable(tmp_path: Path) -> None:
    copy = tmp_path / "sequences"
    shutil.copytree(SHIPPED, copy)
    assert load_catalog(copy)[0].version == load_catalog(SHIPPED)[0].version


@pytest.mark.parametrize(
    ("line", "message", "fix"),
    [
        ("id:", "the sequence id is empty", "id: my-sequence"),
        ("id: 2026", "2026", 'id: "2026"'),
        ('id: "2026"', "", ""),
    ],
)
def test_id_values(tmp_path: Path, line: str, message: str, fix: str) -> None:
    write(tmp_path, "demo.yaml", VALID.replace("id: demo", line))
    catalog, problems = load_catalog(tmp_path)
    if not message:
        assert problems == [] and "2026" in catalog.sequences
        return
    problem = only_problem(problems)
    assert problem.line == 1 and message in problem.message and fix in problem.fix


# -- robustness: whatever a file holds, the loader reports, it never crashes ------------

_KEYS = st.sampled_from(
    ["id", "trigger", "event", "when", "steps", "wait", "template", "exit_on", "send_window",
     "days", "hours", "kind", "rules", "reason", "source", "attributes.budget", "any", "not",
     "in", "lt", "exists", "contains", "description", "x"]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["lead.created", "10m", "mon-fri", "09:00-17:00", "2-20h", "value/a", "a-b"]),
)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(doc=_TREES, fit=_TREES)
def test_any_structure_gives_a_catalog_or_problems(doc: object, fit: object) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for file, obj in (("s.yaml", doc), ("fit.yaml", fit)):
            buffer = io.StringIO()
            YAML().dump(obj, buffer)
            (folder / file).write_text(buffer.getvalue(), encoding="utf-8")
        catalog, problems = load_catalog(folder)
        assert catalog.sequences or problems
        assert all(p.message and p.fix and p.line >= 0 for p in problems)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_catalog_or_problems(text: str) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "s.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
        catalog, problems = load_catalog(folder)
        assert catalog.sequences or problems
        assert all(p.message and p.fix for p in problems)
