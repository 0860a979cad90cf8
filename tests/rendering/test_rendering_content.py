"""Content library: loading with line numbers and fixes, and the pick rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.content import ContentItem, ContentLibrary, locale_chain, normalize_locale

GOOD = """\
items:
  - id: saas-churn
    kind: case_study
    title: Churn halved
    summary: They asked one question.
    outcome: churn from 4 % to 2 %
    url: https://example.com/a
    tags: {industry: [SaaS], problem: churn}
  - id: agency-quote
    kind: testimonial
    title: Calm
    summary: s
    outcome: o
    url: https://example.com/b
    quote: We stopped arguing about hours.
    author: Mette
    locale: da-dk
"""


def load(tmp_path: Path, text: str, name: str = "c.yaml") -> tuple[ContentLibrary, list[str]]:
    (tmp_path / name).write_text(text, encoding="utf-8")
    library, problems = ContentLibrary.load(tmp_path)
    return library, [str(p) for p in problems]


def test_load_good_file(tmp_path: Path) -> None:
    library, problems = load(tmp_path, GOOD)
    assert problems == []
    first, second = library.by_id["agency-quote"], library.by_id["saas-churn"]
    assert second.tags == {"industry": ("saas",), "problem": ("churn",)}
    assert (second.line, second.locale) == (2, "en")
    assert first.locale == "da-DK"
    assert first["quote"] == "We stopped arguing about hours."
    assert first.extra["author"] == "Mette"


def test_missing_content_dir_is_an_empty_library(tmp_path: Path) -> None:
    library, problems = ContentLibrary.load(tmp_path / "nope")
    assert (len(library), problems) == (0, [])


@pytest.mark.parametrize(
    ("text", "line", "message", "fix"),
    [
        (GOOD.replace("    title: Churn halved\n", ""), 2, "has no `title`", "add `title:"),
        (GOOD.replace("kind: case_study", "kind: casestudy"), 3, "not a kind", "case_study"),
        (
            GOOD.replace("https://example.com/a", "example.com/a"),
            7,
            "not a web address",
            "https://",
        ),
        (GOOD.replace("    tags:", "    tag:"), 8, "unknown key `tag`", "did you mean `tags`"),
        (
            GOOD.replace("    quote: We stopped arguing about hours.\n", ""),
            9,
            "has no `quote`",
            "own words",
        ),
        (GOOD.replace("id: agency-quote", "id: saas-churn"), 9, "used twice", "own id"),
        (GOOD.replace("id: saas-churn", "id: Saas Churn!"), 2, "not allowed", "lowercase"),
        (GOOD.replace("locale: da-dk", "locale: danish!"), 17, "not a language code", "da-DK"),
        (GOOD.replace("    summary: s\n", "    summary:\n"), 9, "has no `summary`", "add"),
        (GOOD.replace("  - id: saas", "  -id: saas"), 3, "not valid YAML", "indentation"),
        ("- just a string\n", 1, "not a set of `key: value` lines", "- id:"),
        ("title: x\n", 1, "must hold a list", "items:"),
        (GOOD + "extra: 1\n", 18, "unknown top-level key `extra`", "items:"),
        (
            GOOD.replace("    outcome: o\n", "    outcome: o\n    outcome: p\n"),
            14,
            "not valid YAML",
            "remove one",
        ),
    ],
)
def test_loader_problems_name_file_line_and_fix(
    tmp_path: Path, text: str, line: int, message: str, fix: str
) -> None:
    _, problems = load(tmp_path, text)
    assert problems, "expected a problem"
    match = [p for p in problems if message in p]
    assert match, problems
    assert match[0].startswith(f"{tmp_path / 'c.yaml'}:{line}: ")
    assert fix in match[0]


def test_a_bad_item_does_not_empty_the_library(tmp_path: Path) -> None:
    library, problems = load(tmp_path, GOOD.replace("kind: case_study", "kind: nope"))
    assert len(problems) == 1
    assert list(library.by_id) == ["agency-quote"]


def item(
    ident: str, kind: str = "case_study", locale: str = "en", **tags: tuple[str, ...]
) -> ContentItem:
    return ContentItem(ident, kind, "t", "s", "o", f"https://example.com/{ident}", tags, locale)


LIB = ContentLibrary(
    [
        item("a-generic"),
        item("b-saas", industry=("saas",)),
        item("c-saas-churn", industry=("saas",), problem=("churn",)),
        item("d-da-saas", locale="da", industry=("saas",)),
        item("e-dadk-saas", locale="da-DK", industry=("saas",)),
        item("f-fi", locale="fi"),
        item("g-guide", kind="guide", reason=("budget",)),
        item("h-guide", kind="guide"),
    ]
)


def pick(
    lead_attrs: dict[str, object],
    locale: str | None = None,
    received: frozenset[str] | set[str] = frozenset(),
    kind: str | None = "case_study",
    **tags: str,
) -> str | None:
    found = LIB.pick(kind, {"attributes": lead_attrs}, locale, frozenset(received), **tags)
    return found.id if found else None


def test_pick_offers_only_the_email_language_then_prefers_tags_then_id() -> None:
    assert pick({"industry": "saas", "problem": ["churn", "pricing"]}) == "c-saas-churn"
    assert pick({"industry": ["SaaS"]}) == "b-saas"  # case-insensitive, list or string
    assert pick({}) == "a-generic"
    assert pick({"industry": "saas"}, "da-DK") == "e-dadk-saas"
    assert pick({"industry": "saas"}, "da") == "d-da-saas"
    assert pick({"industry": "saas"}, "da-GL") == "d-da-saas"
    assert pick({"industry": "saas", "problem": "churn"}, "da") == "d-da-saas"  # never English
    assert pick({}, "fi") == "f-fi"
    assert pick({}, "xx") is None  # the renderer passes the fallback email's language


def test_pick_never_offers_another_language_or_received_pieces() -> None:
    assert pick({}, "en", received={"a-generic", "b-saas", "c-saas-churn"}) is None
    assert pick({}, "fi", received={"f-fi"}) is None


def test_pick_explicit_tags_and_kind() -> None:
    assert pick({}, kind="guide", reason="budget") == "g-guide"
    assert pick({}, kind="guide", reason="ethics") == "g-guide"  # best remaining, by id
    assert pick({}, kind="guide", received={"g-guide"}) == "h-guide"
    assert pick({}, kind=None) == "a-generic"
    assert pick({}, kind="webinar") is None


def test_pick_returns_none_when_exhausted() -> None:
    received: set[str] = set()
    order = []
    while (found := pick({"industry": "saas"}, "da", received)) is not None:
        order.append(found)
        received.add(found)
    assert order == ["d-da-saas"]
    received.clear()
    order.clear()
    while (found := pick({"industry": "saas"}, "da-DK", received)) is not None:
        order.append(found)
        received.add(found)
    assert order == ["e-dadk-saas", "d-da-saas"]


@settings(max_examples=200, deadline=None)
@given(
    received=st.sets(st.sampled_from([i.id for i in LIB.items])),
    locale=st.sampled_from([None, "en", "da", "da-DK", "fi", "xx", "fi-FI"]),
    industry=st.sampled_from([None, "saas", "agency", ["saas", "agency"]]),
    kind=st.sampled_from([None, "case_study", "guide"]),
)
def test_pick_properties(
    received: set[str], locale: str | None, industry: object, kind: str | None
) -> None:
    attrs = {} if industry is None else {"industry": industry}
    first = pick(attrs, locale, received, kind)
    assert first == pick(attrs, locale, received, kind)  # deterministic
    if first is not None:
        chosen = LIB.by_id[first]
        assert first not in received
        assert kind is None or chosen.kind == kind
        assert chosen.locale in locale_chain(locale)  # the email's language only
        # Reversing the item order changes nothing.
        reversed_lib = ContentLibrary(list(reversed(LIB.items)))
        again = reversed_lib.pick(kind, {"attributes": attrs}, locale, frozenset(received))
        assert again is not None and again.id == first


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("da-dk", "da-DK"), ("DA", "da"), ("zh_hant_tw", "zh-Hant-TW"), ("../x", None), ("", None)],
)
def test_normalize_locale(tag: str, expected: str | None) -> None:
    assert normalize_locale(tag) == expected


def test_locale_chain() -> None:
    assert locale_chain("da-DK") == ("da-DK", "da")
    assert locale_chain(None, "fi") == ("fi",)
    assert locale_chain("bad tag!", "en") == ("en",)
