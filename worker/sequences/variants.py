"""A/B variants of a step: deterministic assignment, and the numbers for the report.

A step may list ``variants``; each lead gets one, chosen from a hash of the lead id,
the sequence and the step, weighted, so a retry or a replay always picks the same one
and no state is needed to decide. The touch records which one it got (the lead's
variants hash) and the stats count ``sent``, ``click`` and ``converted`` per variant
(``<step>@<variant>:<counter>``).

Nothing picks a winner unless the step says ``winner: auto``; then, once every
variant was sent at least :data:`MIN_SAMPLE` times and the best click rate beats each
other variant with p < :data:`SIGNIFICANCE` (two-proportion z-test), every new lead
gets the best one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Sends per variant before ``winner: auto`` may decide.
MIN_SAMPLE = 100
#: The p-value below which a difference counts as real.
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Variant:
    """One variant of a step.

    Attributes:
        id: Unique within the step (a-z, 0-9, -).
        template: Its template (None: the step's).
        subject: Its subject line, plain text (None: the template's).
        weight: Its share relative to the others (default 1).
        line: Line in the file.
    """

    id: str
    template: str | None
    subject: str | None
    weight: float
    line: int


def assign(variants: Sequence[Variant], lead_id: str, sequence: str, step: str) -> Variant:
    """The variant this lead gets: weighted, from a hash of lead, sequence and step."""
    digest = hashlib.sha256(f"{lead_id}\x1f{sequence}\x1f{step}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.weight for v in variants)
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant
    return variants[-1]


def normal_cdf(x: float) -> float:
    """The standard normal cumulative distribution function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Two-proportion z-test (pooled): is ``x1/n1`` different from ``x2/n2``?

    Returns:
        (z, two-sided p-value); (0.0, 1.0) when either sample is empty or nothing
        (or everything) happened in both.
    """
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / spread
    return z, 2 * (1 - normal_cdf(abs(z)))


@dataclass(frozen=True)
class VariantStats:
    """One variant's numbers in the report.

    Attributes:
        id: The variant.
        sent: Emails sent.
        clicked: Clicks reported by the Event Webhook.
        converted: Goal conversions whose last touch was this variant.
        p_value: Two-sided p of its click rate against the best other variant's
            (1.0 for the best variant itself or without data).
    """

    id: str
    sent: int
    clicked: int
    converted: int
    p_value: float

    @property
    def click_rate(self) -> float:
        return self.clicked / self.sent if self.sent else 0.0


def variant_report(
    step: str, ids: Sequence[str], stats: Mapping[str, Mapping[str, int]]
) -> list[VariantStats]:
    """Per-variant sent, clicked and converted of a step, each compared with the best.

    Args:
        step: The step id.
        ids: Its variant ids.
        stats: One sequence's stats, step row -> counter -> value (``Counters.stats``).
    """
    rows = {v: stats.get(f"{step}@{v}", {}) for v in ids}
    numbers = {v: (rows[v].get("sent", 0), rows[v].get("click", 0)) for v in ids}
    best = max(ids, key=lambda v: (numbers[v][1] / numbers[v][0] if numbers[v][0] else 0.0, v))
    out = []
    for v in ids:
        sent, clicked = numbers[v]
        p = 1.0
        if v != best:
            p = two_proportion_test(numbers[best][1], numbers[best][0], clicked, sent)[1]
        out.append(VariantStats(v, sent, clicked, rows[v].get("converted", 0), p))
    return out


def auto_winner(report: Sequence[VariantStats]) -> str | None:
    """The variant ``winner: auto`` settles on: the best click rate, once every variant
    has :data:`MIN_SAMPLE` sends and the best beats each other with p < 0.05."""
    if len(report) < 2 or any(row.sent < MIN_SAMPLE for row in report):
        return None
    best = max(report, key=lambda row: (row.click_rate, row.id))
    others = [row for row in report if row.id != best.id]
    if all(row.p_value < SIGNIFICANCE and row.click_rate < best.click_rate for row in others):
        return best.id
    return None


def variant_summary(sequence: str, stats: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Lines for ``nurture status``: per A/B-tested step, each variant's sent, clicked,
    converted and the p-value of its click rate against the best variant's."""
    by_step: dict[str, list[str]] = {}
    for name in stats:
        step, at, variant = name.partition("@")
        if at:
            by_step.setdefault(step, []).append(variant)
    lines = []
    for step, ids in sorted(by_step.items()):
        for row in variant_report(step, sorted(ids), stats):
            versus = "best" if row.p_value == 1.0 else f"p={row.p_value:.3f} against the best"
            lines.append(
                f"  {sequence}/{step} variant {row.id}: sent {row.sent}, clicked {row.clicked} "
                f"({row.click_rate:.1%}), converted {row.converted}; {versus}"
            )
    return lines
