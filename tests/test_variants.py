"""A/B variants (issue 14, item 4): weighted deterministic assignment, recorded on the
touch, counted per variant, a two-proportion z-test for the report, and ``winner: auto``
only after a minimum sample and p < 0.05."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.harness import Harness, event
from worker.catalog import load_and_check
from worker.sequences.variants import (
    MIN_SAMPLE,
    Variant,
    VariantStats,
    assign,
    auto_winner,
    normal_cdf,
    two_proportion_test,
    variant_report,
)
from worker.settings import Settings

INLINE_QUEUE = True

SEQUENCE = """\
id: ab
trigger: lead.created
steps:
  - id: hello
    wait: 0s
    template: value/guide
    variants:
      - {id: a}
      - {id: b, subject: "A shorter subject", weight: 2}
"""


def test_the_normal_cdf_and_the_z_test_match_the_textbook() -> None:
    assert normal_cdf(0) == 0.5
    assert normal_cdf(1.959964) == pytest.approx(0.975, abs=1e-6)
    # 30% of 200 against 20% of 200: pooled 25%, z = 0.1 / sqrt(.25*.75*(2/200)).
    z, p = two_proportion_test(60, 200, 40, 200)
    assert z == pytest.approx(0.1 / math.sqrt(0.25 * 0.75 * 0.01))
    assert p == pytest.approx(0.0209, abs=1e-4)
    assert two_proportion_test(0, 0, 3, 10) == (0.0, 1.0)


def test_assignment_is_deterministic_and_weighted() -> None:
    variants = (Variant("a", None, None, 1, 1), Variant("b", None, "S", 2, 2))
    picks = Counter(assign(variants, f"lead-{n}", "ab", "hello").id for n in range(1000))
    assert abs(picks["b"] - 667) < 50 and picks["a"] + picks["b"] == 1000
    again = [assign(variants, f"lead-{n}", "ab", "hello").id for n in range(50)]
    assert again == [assign(variants, f"lead-{n}", "ab", "hello").id for n in range(50)]


def test_winner_auto_waits_for_the_sample_and_significance() -> None:
    def report(sent: int, a_clicks: int, b_clicks: int) -> list[VariantStats]:
        stats = {
            "hello@a": {"sent": sent, "click": a_clicks},
            "hello@b": {"sent": sent, "click": b_clicks},
        }
        return variant_report("hello", ["a", "b"], stats)

    assert auto_winner(report(MIN_SAMPLE - 1, 40, 5)) is None  # too few sends
    assert auto_winner(report(200, 44, 40)) is None  # not significant (p ~ 0.6)
    rows = report(200, 60, 40)
    assert auto_winner(rows) == "a"
    assert rows[1].p_value == pytest.approx(0.0209, abs=1e-4) and rows[0].p_value == 1.0


@pytest.mark.slow  # 1,000 leads through the pipeline: about a minute on a busy machine
def test_1000_leads_split_as_weighted_recorded_and_counted(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    for path in catalog_dirs["sequences"].glob("*.yaml"):
        if path.stem not in ("fit", "decline"):
            path.unlink()
    (catalog_dirs["sequences"] / "ab.yaml").write_text(SEQUENCE, encoding="utf-8")
    h = make_harness()
    for start in range(0, 1000, 100):
        h.emit(
            *(
                event(f"e{n}", lead_id=f"lead-{n}", email=f"p{n}@example.com", timezone="UTC")
                for n in range(start, start + 100)
            )
        )
        h.settle()
    h.advance(timedelta(seconds=1))
    h.advance(timedelta(seconds=1))
    stats = h.rt.store.conversions.sequence_stats("ab")
    assert stats["hello"]["sent"] == 1000
    sent_a, sent_b = stats["hello@a"]["sent"], stats["hello@b"]["sent"]
    assert sent_a + sent_b == 1000 and abs(sent_b - 667) < 50
    # Each touch recorded its variant, and variant b carried its own subject.
    store = h.rt.store
    recorded = store.redis.hget(store.keys.variants("lead-7"), "ab:1:hello")
    expected = "b" if recorded == b"b" else "a"
    subjects = {m["Subject"] for m in h.messages() if m["To"] == "p7@example.com"}
    assert recorded in (b"a", b"b")
    assert (subjects == {"A shorter subject"}) == (expected == "b")


def test_validate_names_a_variant_with_a_missing_template(
    make_settings: Callable[..., Settings], catalog_dirs: dict[str, Path]
) -> None:
    (catalog_dirs["sequences"] / "ab.yaml").write_text(
        SEQUENCE.replace("- {id: a}", "- {id: a, template: value/gide}") + "    winner: manual\n",
        encoding="utf-8",
    )
    _, problems = load_and_check(make_settings())
    text = [f"{p.file}:{p.line}: {p.message} — {p.fix}" for p in problems]
    assert any("ab.yaml:10: winner: 'manual' needs `winner: auto`" in t for t in text), text
    (catalog_dirs["sequences"] / "ab.yaml").write_text(
        SEQUENCE.replace("- {id: a}", "- {id: a, template: value/gide}"), encoding="utf-8"
    )
    _, problems = load_and_check(make_settings())
    text = [f"{p.file}:{p.line}: {p.message} — {p.fix}" for p in problems]
    assert any("ab.yaml:8:" in t and "value/gide" in t and "value/guide" in t for t in text), text


def test_the_status_report_shows_variants_and_significance() -> None:
    from worker.sequences.variants import variant_summary

    stats = {
        "hello": {"sent": 400},
        "hello@a": {"sent": 200, "click": 60, "converted": 3},
        "hello@b": {"sent": 200, "click": 40},
    }
    assert variant_summary("ab", stats) == [
        "  ab/hello variant a: sent 200, clicked 60 (30.0%), converted 3; best",
        "  ab/hello variant b: sent 200, clicked 40 (20.0%), converted 0; p=0.021 against the best",
    ]


def test_preview_lists_the_variants_and_the_sample_leads_one(
    make_settings: Callable[..., Settings], catalog_dirs: dict[str, Path]
) -> None:
    from datetime import UTC, datetime

    from worker.preview import preview

    (catalog_dirs["sequences"] / "ab.yaml").write_text(
        SEQUENCE + "    winner: auto\n", encoding="utf-8"
    )
    lead = {"id": "lead-7", "email": "ann@example.com", "timezone": "UTC"}
    text = preview(make_settings(), "ab", lead, datetime(2026, 11, 30, 9, tzinfo=UTC), None)
    mine = assign(
        (Variant("a", None, None, 1, 8), Variant("b", None, "A shorter subject", 2, 9)),
        "lead-7",
        "ab",
        "hello",
    ).id
    assert "A/B test winner: auto (after 100 sends each and p < 0.05)" in text
    assert "variant a: 33%, the step's template" in text
    assert "variant b: 67%, the step's template, subject 'A shorter subject'" in text
    assert [line.split()[1] for line in text.splitlines() if "<- this lead" in line] == [mine + ":"]
