"""Engagement conditions: what a lead did with the touches it was sent.

A step's ``when`` may name earlier touches and content::

    when: {clicked: case-study}                 # clicked a link in that step's email
    when: {not: {clicked: case-study}}
    when: {opened: outcome-story}               # opens are inflated by Apple MPP
    when: {clicked_content: saas-churn}         # clicked a content piece's link
    when: {clicked_tag: churn}                  # ... a piece carrying that tag value
    when: {replied: true}
    when: {clicked: case-study, scope: any}     # in any enrollment, not only this one

Facts are recorded per lead by the SendGrid Event Webhook (opens and clicks, attributed
through the message's ``custom_args``) and read back as an :class:`Engagement` placed in
the condition context under :data:`ENGAGEMENT`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import Problem, did_you_mean

#: Context key of the :class:`Engagement` (not a path a marketer can write).
ENGAGEMENT = "_engagement"
#: Condition keys that look at engagement.
KINDS = ("clicked", "opened", "clicked_content", "clicked_tag", "replied")
#: Kinds whose value is a step id of the same sequence.
STEP_KINDS = ("clicked", "opened")
SCOPES = ("enrollment", "any")
#: Prefix of the fields recorded for any enrollment (the others start ``<seq>:<gen>|``).
ANY = "any|"


def fact(kind: str, value: str, sequence: str = "") -> str:
    """The name of one engagement fact, e.g. ``clicked:value-first/case-study``."""
    if kind in STEP_KINDS:
        return f"{kind}:{sequence}/{value}"
    if kind == "replied":
        return "replied"
    return f"{kind}:{value.lower() if kind == 'clicked_tag' else value}"


def fields_for(sequence: str, generation: int | str, facts: Iterable[str]) -> list[str]:
    """The store fields recording ``facts`` for one enrollment and for any enrollment."""
    out: list[str] = []
    for name in facts:
        out += [f"{ANY}{name}", f"{sequence}:{generation}|{name}"]
    return out


@dataclass(frozen=True)
class Engagement:
    """The facts of one lead, as seen from one enrollment.

    Attributes:
        sequence: The enrollment's sequence (step ids in conditions are its steps).
        this: Facts recorded during this enrollment.
        any: Facts recorded in any enrollment (and content clicks from any email).
    """

    sequence: str
    this: frozenset[str] = frozenset()
    any: frozenset[str] = frozenset()

    @classmethod
    def from_fields(
        cls,
        sequence: str,
        generation: int,
        recorded: Mapping[str, Any],
        replied_at: float | None = None,
        started: float = 0.0,
    ) -> Engagement:
        """Build from the stored fields (``any|<fact>`` and ``<seq>:<gen>|<fact>``).

        ``replied`` comes from the lead's latest ``lead.replied`` time: in this
        enrollment when it is at or after the enrollment started.
        """
        mine = f"{sequence}:{generation}|"
        this = {name[len(mine) :] for name in recorded if name.startswith(mine)}
        anywhere = {name[len(ANY) :] for name in recorded if name.startswith(ANY)}
        if replied_at is not None:
            anywhere.add("replied")
            if replied_at >= started:
                this.add("replied")
        return cls(sequence, frozenset(this), frozenset(anywhere))

    def has(self, name: str, scope: str) -> bool:
        return name in (self.any if scope == "any" else self.this)

    def clicked_tags(self) -> frozenset[str]:
        """Tag values of content the lead clicked, in any email (for ``content()``)."""
        prefix = "clicked_tag:"
        return frozenset(name[len(prefix) :] for name in self.any if name.startswith(prefix))


@dataclass(frozen=True)
class Engaged:
    """One engagement test, e.g. clicked the step ``case-study`` in this enrollment.

    Attributes:
        kind: One of :data:`KINDS`.
        value: A step id, content id or tag (``true`` for replied, as text).
        scope: ``enrollment`` (the default) or ``any``.
        line: Line in the file, for the loader's checks on step ids.
    """

    kind: str
    value: str
    scope: str
    line: int

    def evaluate(self, ctx: Mapping[str, Any]) -> bool:
        engagement = ctx.get(ENGAGEMENT)
        if not isinstance(engagement, Engagement):
            return False  # nothing recorded (a preview, or a trigger): not engaged
        return engagement.has(fact(self.kind, self.value, engagement.sequence), self.scope)

    def describe(self) -> str:
        where = " (any enrollment)" if self.scope == "any" else ""
        if self.kind == "replied":
            return f"replied{where}"
        words = {
            "clicked": "clicked step",
            "opened": "opened step",
            "clicked_content": "clicked content",
            "clicked_tag": "clicked a piece tagged",
        }
        return f"{words[self.kind]} {self.value!r}{where}"


def step_ref_problems(
    file: str, steps: Iterable[tuple[str, Iterable[Engaged]]], where: str = "step"
) -> list[Problem]:
    """Problems of engagement tests naming steps that do not exist or do not come earlier.

    Args:
        file: The sequence file, for messages.
        steps: (step id, its engagement tests) in file order.
        where: What the tests belong to (``step`` or ``trigger``), for messages.
    """
    ordered = list(steps)
    ids = [step_id for step_id, _ in ordered]
    problems: list[Problem] = []
    for index, (step_id, tests) in enumerate(ordered):
        earlier = ids[:index]
        for test in tests:
            if test.kind not in STEP_KINDS:
                continue
            if test.value not in ids:
                hint = did_you_mean(test.value, earlier or ids)
                problems.append(
                    Problem(
                        file,
                        test.line,
                        f"{test.kind}: {test.value!r} names no step of this sequence",
                        f"{hint}name an earlier step: {', '.join(earlier) or '(none yet)'}",
                    )
                )
            elif test.value not in earlier:
                problems.append(
                    Problem(
                        file,
                        test.line,
                        f"{test.kind}: {test.value!r} is this step or a later one, so it "
                        f"has not been sent when step {step_id!r} is due",
                        "name a step that comes before this one",
                    )
                )
    return problems
