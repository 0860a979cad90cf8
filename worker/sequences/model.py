"""The loaded, validated catalog: sequences, their steps and the fit rules.

Everything here is immutable; the loader builds it once and every worker thread
reads it without locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from worker.senders import SequenceSender
from worker.sequences.conditions import Condition
from worker.sequences.durations import Wait
from worker.sequences.variants import Variant
from worker.sequences.windows import SendWindow

Kind = Literal["nurture", "decline", "transactional"]
KINDS: tuple[Kind, ...] = ("nurture", "decline", "transactional")
DECLINE_TRIGGER = "lead.disqualified"


def default_kind(trigger_event: str) -> Kind:
    """The kind of a sequence that does not say: decline for ``lead.disqualified``."""
    return "decline" if trigger_event == DECLINE_TRIGGER else "nurture"


#: What a step does: email the lead, notify a person inside the company, or POST a webhook.
Channel = Literal["email", "notify", "webhook"]


@dataclass(frozen=True)
class Notify:
    """A ``notify:`` step: an internal email to a person about the lead (no unsubscribe
    footer, outside the lead's frequency cap and funnel).

    Attributes:
        to: The address to notify; None: the lead's owner (``owner_email`` from the
            CRM), else ``NURTURE_NOTIFY_TO``, else ``NURTURE_REPLY_TO``, else the From
            address.
        locale: The language of the email (``locale: da``); None: ``NURTURE_NOTIFY_LOCALE``,
            else ``NURTURE_DEFAULT_LOCALE`` (never the lead's: it is not for the lead).
    """

    to: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class Webhook:
    """A ``webhook:`` step: a signed JSON POST (see :mod:`worker.webhooks`).

    Attributes:
        url: The URL written on the step (None: ``target`` names one in the settings).
        target: A name from ``NURTURE_WEBHOOK_TARGETS`` (None: ``url``).
        line: Line of ``webhook:`` in the file, for messages.
    """

    url: str | None = None
    target: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Step:
    """One touch of a sequence.

    Attributes:
        id: Unique within the sequence.
        wait: Wait after the trigger (first step) or after the previous step.
        template: Template name without locale folder or ``.j2``, e.g. ``value/case_study``.
        when: The step is skipped unless this holds (None: always sent).
        line: Line of the step in its file, for messages.
        variants: A/B variants (empty: none); see :mod:`worker.sequences.variants`.
        winner_auto: ``winner: auto``: settle on a significantly better variant.
        notify: For a ``notify:`` step: whom it goes to (``template`` is its email).
        webhook: For a ``webhook:`` step: where it posts (``template`` is "").
        needs_content: ``needs_content: true``: when the template's ``content()`` finds
            no piece the lead has not had in the email's language, the lead leaves the
            sequence (reason ``content exhausted: …``) instead of getting this email.
    """

    id: str
    wait: Wait
    template: str
    when: Condition | None
    line: int
    variants: tuple[Variant, ...] = ()
    winner_auto: bool = False
    notify: Notify | None = None
    webhook: Webhook | None = None
    needs_content: bool = False

    @property
    def channel(self) -> Channel:
        """``email`` (to the lead), ``notify`` (to a person inside) or ``webhook``."""
        if self.notify is not None:
            return "notify"
        if self.webhook is not None:
            return "webhook"
        return "email"


@dataclass(frozen=True)
class Reenroll:
    """When a lead may enter a match-triggered sequence again (never while in it).

    Attributes:
        after: Seconds after the previous enrollment started (None: not by time).
        when_changes: A condition path (``attributes.lifecycle``): again when its value
            differs from the value at the previous enrollment (None: not by change).
    """

    after: float | None = None
    when_changes: str | None = None

    def describe(self) -> str:
        if self.after is not None:
            return f"again {self.after / 86400:g} days after the previous start"
        if self.when_changes is not None:
            return f"again when {self.when_changes} changes"
        return "never again"


@dataclass(frozen=True)
class Tracking:
    """SendGrid open and click tracking for a sequence's emails (both off by default:
    a plain one-to-one note has no pixel and no rewritten links)."""

    opens: bool = False
    clicks: bool = False


@dataclass(frozen=True)
class Sequence:
    """One sequence file.

    Attributes:
        id: Unique across all files.
        description: Free text for people.
        trigger_event: The event type that enrolls a lead.
        trigger_when: Extra condition on the lead and event (None: every such event).
        exit_on: Event types that end the lead's run of this sequence.
        send_window: When touches may go out (None: any time).
        steps: The touches, in order.
        kind: ``nurture`` (frequency-capped), ``decline`` (one polite refusal) or
            ``transactional`` (not capped).
        file: The file it was read from.
        line: Line of its ``id``.
        sender: Its own ``from`` / ``reply_to`` (None: the settings' sender).
        tracking: Open and click tracking (off unless the file says).
        paused: ``paused: true`` in the file: nothing of it is sent; its touches keep
            their place and go out when the line is removed (``nurture pause`` is the
            emergency switch that needs no commit).
        goals: Event types that count as a conversion: reaching one ends the
            sequence for the lead (exit reason ``goal:<event>``) and is counted.
        match: ``trigger: {match: ...}``: the lead enrolls the first time it comes to
            match ``trigger_when``, whatever event changed it (``trigger_event`` is "").
        reenroll: For match triggers: when the lead may enroll again.
        exit_when: Conditions listed in ``exit_on`` (e.g. ``{clicked_content: pricing}``),
            checked when each step falls due: the lead leaves when any holds.
    """

    id: str
    description: str
    trigger_event: str
    trigger_when: Condition | None
    exit_on: frozenset[str]
    send_window: SendWindow | None
    steps: tuple[Step, ...]
    kind: Kind
    file: str
    line: int
    sender: SequenceSender | None = None
    tracking: Tracking = field(default_factory=Tracking)
    paused: bool = False
    goals: frozenset[str] = frozenset()
    match: bool = False
    reenroll: Reenroll = field(default_factory=Reenroll)
    exit_when: Condition | None = None

    def step(self, step_id: str) -> Step | None:
        """The step with this id, or None."""
        return next((s for s in self.steps if s.id == step_id), None)

    def index_of(self, step_id: str) -> int | None:
        """The 0-based position of the step with this id, or None."""
        return next((i for i, s in enumerate(self.steps) if s.id == step_id), None)

    def next_step(self, step_id: str) -> Step | None:
        """The step after ``step_id``, or None at the end (or for an unknown id)."""
        index = self.index_of(step_id)
        if index is None or index + 1 >= len(self.steps):
            return None
        return self.steps[index + 1]


@dataclass(frozen=True)
class FitRule:
    """A rule of ``fit.yaml``: a lead matching ``when`` is disqualified with ``reason``.

    Attributes:
        id: Unique within the file.
        when: The condition.
        reason: Short id given to the decline templates as ``event.data.reason``.
        file: The file it was read from.
        line: Line of the rule.
    """

    id: str
    when: Condition
    reason: str
    file: str
    line: int


@dataclass(frozen=True)
class TemplateRef:
    """A step's template, named in a sequence file that did not load (other problems):
    ``nurture validate`` still checks that the template exists, so one run shows every
    mistake rather than one layer at a time."""

    file: str
    line: int
    step: str
    template: str


@dataclass(frozen=True)
class Catalog:
    """Every sequence and fit rule that loaded without problems.

    Attributes:
        sequences: Sequence id -> sequence.
        fit_rules: In file order (the first match wins).
        version: Short sha256 over every file read; changes whenever any file does.
        left_out_templates: Templates named by steps of sequences left out.
    """

    sequences: Mapping[str, Sequence] = field(default_factory=dict, hash=False)
    fit_rules: tuple[FitRule, ...] = ()
    version: str = ""
    left_out_templates: tuple[TemplateRef, ...] = ()

    @property
    def match_sequences(self) -> list[Sequence]:
        """Sequences started by ``trigger: {match: ...}``, in id order."""
        return [self.sequences[k] for k in sorted(self.sequences) if self.sequences[k].match]

    def triggered_by(self, event_type: str) -> list[Sequence]:
        """Sequences whose trigger is ``event_type``, in id order."""
        return [
            self.sequences[k]
            for k in sorted(self.sequences)
            if self.sequences[k].trigger_event == event_type
        ]

    @property
    def decline_sequences(self) -> list[Sequence]:
        """Sequences of kind ``decline``, in id order."""
        return [
            self.sequences[k] for k in sorted(self.sequences) if self.sequences[k].kind == "decline"
        ]

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type named by a trigger or an ``exit_on``."""
        names: set[str] = set()
        for sequence in self.sequences.values():
            if sequence.trigger_event:
                names.add(sequence.trigger_event)
            names |= sequence.exit_on | sequence.goals
        return frozenset(names)
