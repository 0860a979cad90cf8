"""`when` conditions: operators, missing values, type mismatches, combinators, problems."""

from __future__ import annotations

from typing import Any

import pytest

from worker.sequences.conditions import Condition, compile_when, condition_context

LEAD: dict[str, Any] = {
    "id": "crm-1",
    "email": "ann@example.com",
    "first_name": "Ann",
    "company": "Berg ApS",
    "locale": "da-DK",
    "timezone": "Europe/Copenhagen",
    "source": "referral",
    "last_name": "",
    "attributes": {
        "industry": "saas",
        "budget": 800,
        "budget_text": "800",
        "tags": ["vip", "newsletter"],
        "note": "needs a new website",
        "requests_guarantee": True,
        "flag_text": "true",
        "nothing": None,
    },
}
DATA = {"referrer": {"name": "Ole Holm", "relationship": "weak"}}


def compile_ok(when: Any) -> Condition:
    condition, problems = compile_when(when, "t.yaml", 1)
    assert problems == []
    assert condition is not None
    return condition


def check(when: Any, lead: dict[str, Any] = LEAD, data: dict[str, Any] | None = DATA) -> bool:
    return compile_ok(when).matches(condition_context(lead, data))


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # equals
        ({"source": "referral"}, True),
        ({"source": "Referral"}, False),  # case-sensitive
        ({"locale": "da-dk"}, True),  # locale compares case-insensitively
        ({"locale": "da"}, False),  # ... but exactly: no prefix match
        ({"attributes.budget": 800}, True),
        ({"attributes.budget_text": 800}, True),  # numeric text compares as a number
        ({"attributes.budget": "800"}, True),
        ({"attributes.industry": 800}, False),  # text vs number: false, no error
        ({"attributes.requests_guarantee": True}, True),
        ({"attributes.flag_text": True}, True),  # "true" from a CRM counts as true
        ({"attributes.requests_guarantee": "yes"}, False),
        ({"data.referrer.relationship": "weak"}, True),
        ({"data.referrer.name": "Ole Holm"}, True),
        # in / not_in
        ({"attributes.industry": {"in": ["saas", "agency"]}}, True),
        ({"attributes.industry": {"in": ["retail"]}}, False),
        ({"attributes.budget_text": {"in": [500, 800]}}, True),
        ({"attributes.tags": {"in": ["vip"]}}, True),  # a list value: any overlap
        ({"attributes.industry": {"not_in": ["saas"]}}, False),
        ({"attributes.industry": {"not_in": ["retail"]}}, True),
        ({"attributes.tags": {"not_in": ["vip"]}}, False),
        # comparisons
        ({"attributes.budget": {"lt": 1000}}, True),
        ({"attributes.budget": {"lt": 800}}, False),
        ({"attributes.budget": {"lte": 800}}, True),
        ({"attributes.budget": {"gt": 800}}, False),
        ({"attributes.budget": {"gte": 800}}, True),
        ({"attributes.budget_text": {"gt": 500}}, True),
        ({"attributes.budget": {"gte": "500"}}, True),  # numeric text operand
        ({"attributes.industry": {"lt": 5}}, False),  # not a number: false
        ({"attributes.requests_guarantee": {"gt": 0}}, False),  # booleans are not numbers
        ({"attributes.budget": {"gte": 500, "lt": 1000}}, True),  # both must hold
        ({"attributes.budget": {"gte": 500, "lt": 600}}, False),
        # exists
        ({"source": {"exists": True}}, True),
        ({"source": {"exists": False}}, False),
        ({"data.referrer": {"exists": True}}, True),
        ({"attributes.nothing": {"exists": False}}, True),  # null counts as missing
        ({"last_name": {"exists": False}}, True),  # blank text counts as missing
        # contains
        ({"attributes.note": {"contains": "website"}}, True),
        ({"attributes.note": {"contains": "Website"}}, False),
        ({"attributes.tags": {"contains": "vip"}}, True),
        ({"attributes.tags": {"contains": "vi"}}, False),  # lists: whole items only
        ({"attributes.budget": {"contains": "8"}}, False),  # numbers hold nothing
        # explicit equals operator
        ({"source": {"equals": "referral"}}, True),
        # several keys: all must hold
        ({"source": "referral", "attributes.industry": "saas"}, True),
        ({"source": "referral", "attributes.industry": "retail"}, False),
    ],
)
def test_operator(when: dict[str, Any], expected: bool) -> None:
    assert check(when) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"attributes.missing": "x"}, False),
        ({"attributes.missing": {"in": ["x"]}}, False),
        ({"attributes.missing": {"not_in": ["x"]}}, True),
        ({"attributes.missing": {"lt": 5}}, False),
        ({"attributes.missing": {"lte": 5}}, False),
        ({"attributes.missing": {"gt": 5}}, False),
        ({"attributes.missing": {"gte": 5}}, False),
        ({"attributes.missing": {"contains": "x"}}, False),
        ({"attributes.missing": {"exists": True}}, False),
        ({"attributes.missing": {"exists": False}}, True),
        ({"data.referrer.missing.deeper": {"exists": False}}, True),
        ({"data.referrer.name.deeper": "x"}, False),  # through a text value: missing
        ({"company": {"not_in": ["Berg ApS"]}}, False),  # present and listed
    ],
)
def test_missing_values(when: dict[str, Any], expected: bool) -> None:
    assert check(when) is expected


def test_missing_data_and_attributes() -> None:
    bare = {"id": "crm-2", "email": "b@example.com"}
    ctx = condition_context(bare, None)
    assert ctx["attributes"] == {} and ctx["data"] == {} and ctx["source"] is None
    assert compile_ok({"source": {"not_in": ["referral"]}}).matches(ctx)
    assert not compile_ok({"attributes.budget": {"lt": 500}}).matches(ctx)
    assert compile_ok({"data.referrer": {"exists": False}}).matches(ctx)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"any": [{"source": "outbound"}, {"data.referrer": {"exists": True}}]}, True),
        ({"any": [{"source": "outbound"}, {"attributes.industry": "retail"}]}, False),
        ({"all": [{"source": "referral"}, {"attributes.budget": {"gt": 500}}]}, True),
        ({"all": [{"source": "referral"}, {"attributes.budget": {"gt": 900}}]}, False),
        ({"not": {"source": "referral"}}, False),
        ({"not": {"attributes.missing": "x"}}, True),
        ({"not": {"any": [{"source": "outbound"}, {"source": "referral"}]}}, False),
        ({"source": "referral", "any": [{"attributes.industry": "saas"}]}, True),
        ({"source": "outbound", "any": [{"attributes.industry": "saas"}]}, False),
    ],
)
def test_combinators(when: dict[str, Any], expected: bool) -> None:
    assert check(when) is expected


def test_paths_are_collected_in_order_without_repeats() -> None:
    condition = compile_ok(
        {
            "source": {"not_in": ["referral"]},
            "any": [{"attributes.budget": {"gte": 5}}, {"source": "x"}],
            "not": {"data.referrer.relationship": "weak"},
        }
    )
    assert condition.paths == ("source", "attributes.budget", "data.referrer.relationship")


@pytest.mark.parametrize(
    "when",
    [
        {"source": "referral"},
        {"attributes.industry": {"in": ["saas", "agency"]}},
        {"attributes.industry": {"not_in": ["other", "saas"]}},
        {"attributes.budget": {"lt": 500}},
        {"attributes.budget": {"gte": 1000, "lt": 2000}},
        {"attributes.budget": {"gt": 2.5}},
        {"attributes.note": {"contains": "web"}},
        {"attributes.tags": {"contains": 7}},
        {"data.referrer.relationship": {"exists": True}},
        {"data.referrer": {"exists": False}, "source": {"not_in": ["referral"]}},
        {"any": [{"source": "referral"}, {"data.referrer": {"exists": True}}]},
        {"all": [{"locale": "da"}, {"attributes.budget": {"lte": 10}}]},
    ],
)
def test_guaranteed_sample_satisfies_condition(when: dict[str, Any]) -> None:
    condition = compile_ok(when)
    lead: dict[str, Any] = {"id": "sample", "email": "s@example.com", "attributes": {}}
    data: dict[str, Any] = {}
    for path, value in condition.guaranteed().items():
        head, _, rest = path.partition(".")
        if head in ("attributes", "data"):
            target = lead["attributes"] if head == "attributes" else data
            *parents, last = rest.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
        else:
            lead[head] = value
    assert condition.matches(condition_context(lead, data))


def test_guaranteed_leaves_out_paths_that_must_be_missing() -> None:
    sample = compile_ok({"data.referrer": {"exists": False}, "source": "web"}).guaranteed()
    assert sample == {"source": "web"}


def test_describe_reads_as_plain_words() -> None:
    condition = compile_ok({"source": {"not_in": ["referral"]}, "attributes.budget": {"gte": 1000}})
    assert str(condition) == "source is none of ['referral'] and attributes.budget >= 1000"


def test_none_compiles_to_no_condition() -> None:
    assert compile_when(None, "t.yaml", 3) == (None, [])


@pytest.mark.parametrize(
    ("when", "message", "fix"),
    [
        ({"attributes.budget": {"gtee": 5}}, "unknown operator 'gtee'", "did you mean gte?"),
        ({"attributes.budget": {"foo": 5}}, "unknown operator 'foo'", "Operators: in, not_in"),
        ({"attributes.budget": {"less than": 5}}, "unknown operator", "did you mean lt?"),
        ({"attributes.budget": {">=": 5}}, "unknown operator '>='", "did you mean gte?"),
        ({"source": {"!=": "web"}}, "unknown operator '!='", "not_in: [value]"),
        ({"budget": {"lt": 5}}, "unknown field 'budget'", "did you mean attributes.budget?"),
        ({"sorce": "referral"}, "unknown field 'sorce'", "did you mean source?"),
        ({"attribute.budget": 5}, "unknown field 'attribute.budget'", "attributes.budget"),
        ({"lead.source": "x"}, "unknown field 'lead.source'", "did you mean source?"),
        ({"lead.sorce": "x"}, "unknown field 'lead.sorce'", "did you mean source?"),
        ({"lead.budget": 5}, "unknown field 'lead.budget'", "did you mean attributes.budget?"),
        ({"event.data.reason": "x"}, "unknown field", "did you mean data.reason?"),
        ({"referrer.name": "x"}, "unknown field", "attributes.referrer.name or data.referrer.name"),
        ({"attributes": {"budget": 5}}, "'attributes' needs a name", "attributes.budget"),
        ({"attributes..x": 5}, "empty part", "attributes.industry"),
        ({"source": {"in": "referral"}}, "in needs a list", "in: [saas, agency]"),
        ({"source": {"in": []}}, "in needs a list", "in: [saas, agency]"),
        ({"source": {"not_in": [["a"]]}}, "not a plain value", "plain values"),
        ({"attributes.budget": {"lt": "cheap"}}, "lt needs a number", "lt: 500"),
        ({"attributes.budget": {"gte": True}}, "gte needs a number", "gte: 500"),
        ({"source": {"exists": "yes"}}, "exists needs true or false", "exists: true"),
        ({"source": {"contains": ["a"]}}, "contains needs one plain value", "contains: saas"),
        ({"source": ["a", "b"]}, "followed by a list", "{in: [...]}"),
        ({"source": None}, "source has no value", "exists: false"),
        ({"source": {}}, "empty test", "an operator: in, not_in"),
        ({}, "empty, so it would match every lead", "add a condition"),
        ("referral", "must be a list of conditions", "when: {attributes.industry: saas}"),
        ({"any": {"source": "x"}}, "any needs a list", "any: ["),
        ({"any": ["x"]}, "each entry of any must be", "when:"),
        ({"not": ["x"]}, "not must be", "when:"),
        ({"source": {"attributes.x": 1}}, "unknown operator 'attributes.x'", "indentation"),
        ({5: "x"}, "not a field name", "source, locale"),
    ],
)
def test_problems(when: Any, message: str, fix: str) -> None:
    condition, problems = compile_when(when, "seq.yaml", 7)
    assert condition is None
    assert len(problems) == 1, problems
    problem = problems[0]
    assert (problem.file, problem.line) == ("seq.yaml", 7)
    assert message in problem.message
    assert fix in problem.fix


def test_every_problem_is_reported() -> None:
    condition, problems = compile_when(
        {"budget": 5, "source": {"gtee": 1}, "any": [{"x": 1}, {"attributes.a": {"lt": "z"}}]},
        "seq.yaml",
        2,
    )
    assert condition is None
    assert len(problems) == 4


def test_custom_line_lookup_is_used() -> None:
    lines = {"source": 11, "gtee": 12}

    def lookup(node: Any, key: Any, default: int) -> int:
        return lines.get(str(key), default)

    _, problems = compile_when({"source": {"gtee": 1}}, "f.yaml", 10, lookup)
    assert [p.line for p in problems] == [12]


def test_yaml_dates_compare_as_iso_text() -> None:
    import datetime

    condition = compile_ok({"attributes.since": datetime.date(2026, 1, 5)})
    lead = {**LEAD, "attributes": {"since": "2026-01-05"}}
    assert condition.matches(condition_context(lead, None))


def test_condition_is_hashable_and_comparable() -> None:
    one = compile_ok({"source": {"in": ["a", "b"]}})
    two = compile_ok({"source": {"in": ["a", "b"]}})
    assert one == two and hash(one) == hash(two)
