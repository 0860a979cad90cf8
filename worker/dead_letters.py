"""What ``nurture dead-letters``, ``nurture retry`` and ``nurture discard`` do.

A dead letter is something the worker could not process, kept with the reason
(``worker/store/dead_letters.py``): a failed touch (refused by SendGrid, a template that
does not render for the lead, transient failures until the attempts ran out) or an
event that could not be applied. Retrying never sends twice: a touch is reopened in the
idempotency ledger only while its entry says ``dead:`` (certainly not sent) and then
goes through the ledger like any touch; an event is queued again for the pipeline,
which applies events idempotently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from worker.enrollment import TouchRef
from worker.events import validate_event
from worker.ingest import ingest
from worker.runtime import Runtime


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as an operator reads it.

    Attributes:
        id: The stream id (what ``nurture retry`` / ``discard`` take).
        at: Unix time it was kept.
        kind: ``touch``, ``event`` or an actor name (a queue message that failed for good).
        reason: The full reason.
        category: The reason without its details, for counting (e.g. ``refused by sendgrid``).
        lead: The lead id, when known.
        sequence: The sequence id (touches).
        step: The step id (touches).
        touch: The touch id (touches).
        event: The raw event JSON (events).
    """

    id: str
    at: float
    kind: str
    reason: str
    category: str
    lead: str = ""
    sequence: str = ""
    step: str = ""
    touch: str = ""
    event: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "category": self.category,
            "reason": self.reason,
            "lead": self.lead,
            "sequence": self.sequence,
            "step": self.step,
        }


def category(reason: str) -> str:
    """The reason's kind: its text before the first colon, numbers replaced by N."""
    head = reason.split(":", 1)[0].strip()
    return re.sub(r"\d+", "N", head)[:80] or "unknown"


def parse(entry: dict[str, str]) -> DeadLetter:
    """Read one stored dead letter."""
    try:
        payload = json.loads(entry.get("payload") or "{}")
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    reason = entry.get("reason", "")
    base: dict[str, Any] = {
        "id": entry["id"],
        "at": float(entry.get("at") or 0),
        "kind": entry.get("kind", ""),
        "reason": reason,
        "category": category(reason),
    }
    member = payload.get("touch")
    if isinstance(member, str):
        try:
            ref = TouchRef.parse(member)
        except ValueError:
            return DeadLetter(**base, touch=member)
        return DeadLetter(
            **base, lead=ref.lead_id, sequence=ref.sequence, step=ref.step, touch=member
        )
    raw = payload.get("event")
    if isinstance(raw, str):
        lead = ""
        try:
            doc = json.loads(raw)
            lead = str(doc.get("lead", {}).get("id", "")) if isinstance(doc, dict) else ""
        except (ValueError, AttributeError):
            pass
        return DeadLetter(**base, lead=lead, event=raw)
    return DeadLetter(**base, extra=payload)


def load(runtime: Runtime, limit: int = 100_000) -> list[DeadLetter]:
    """Every dead letter (up to ``limit``), oldest first."""
    return [parse(entry) for entry in runtime.store.dead.all(limit)]


def select(
    letters: list[DeadLetter],
    *,
    ids: list[str] | None = None,
    reason: str | None = None,
    sequence: str | None = None,
) -> list[DeadLetter]:
    """The letters matching every given filter (``reason`` matches the category or a
    part of the reason text, case-insensitively)."""
    chosen = letters
    if ids:
        wanted = set(ids)
        chosen = [d for d in chosen if d.id in wanted]
    if reason:
        needle = reason.lower()
        chosen = [d for d in chosen if needle in d.reason.lower() or needle == d.category.lower()]
    if sequence:
        chosen = [d for d in chosen if d.sequence == sequence]
    return chosen


def counts_by_category(letters: list[DeadLetter]) -> list[tuple[str, int]]:
    """How many letters of each kind of reason, most first."""
    return Counter(d.category for d in letters).most_common()


@dataclass
class RetryReport:
    """What ``nurture retry`` did.

    Attributes:
        touches: Touches reopened in the ledger and put back on the schedule.
        events: Events queued again.
        refused: (letter id, why) of letters that were not retried (and are kept).
    """

    touches: int = 0
    events: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What ``nurture retry`` prints."""
        return [
            f"retried: {self.touches} touch(es) back on the schedule, {self.events} "
            "event(s) queued again",
            *(f"  not retried {letter_id}: {why}" for letter_id, why in self.refused),
        ]


@dataclass(frozen=True)
class DiscardReport:
    """What ``nurture discard`` did.

    Attributes:
        gone: How many dead letters were deleted.
    """

    gone: int

    def lines(self) -> list[str]:
        """What ``nurture discard`` prints."""
        return [f"discarded {self.gone} dead letter(s)"]


def retry(runtime: Runtime, letters: list[DeadLetter]) -> RetryReport:
    """Retry dead letters; those retried leave the list (a new failure comes back).

    Touches: reopened in the ledger (only from ``dead:``) and scheduled now; the sender
    then sends them through the ledger, so a touch is never sent twice. Events: their
    id is forgotten by the replay guard and the event is queued again.
    """
    report = RetryReport()
    store, now = runtime.store, runtime.clock.now().timestamp()
    done: list[str] = []
    events = []
    for letter in letters:
        if letter.touch:
            blocked = store.ledger.reopen(letter.touch, now)
            if blocked is not None and not blocked.startswith("retry:"):
                report.refused.append((letter.id, _why_not(blocked)))
                continue
            store.schedule.reschedule(letter.touch, now)
            report.touches += 1
            done.append(letter.id)
        elif letter.event:
            try:
                events.append(validate_event(json.loads(letter.event), 0))
            except Exception as exc:  # the event is malformed: retrying cannot help
                report.refused.append((letter.id, f"the event is invalid: {exc}"))
                continue
            done.append(letter.id)
        else:
            report.refused.append((letter.id, f"a {letter.kind} message cannot be retried"))
    if events:
        store.events.forget(event.id for event in events)
        report.events = ingest(runtime, events).accepted
    store.dead.delete(done)
    return report


def _why_not(ledger_entry: str) -> str:
    state = ledger_entry.split(":", 1)[0]
    if state == "sent":
        return "already sent; not sent again"
    if state == "unknown":
        return (
            "outcome unknown: SendGrid may have it (check its Email Activity); not resent "
            "automatically; discard it once checked"
        )
    if state == "sending":
        return "being sent right now"
    if not state:
        return "never reserved in the ledger; nothing to retry"
    return f"ledger says {state}; not retried"


def discard(runtime: Runtime, letters: list[DeadLetter]) -> DiscardReport:
    """Forget dead letters (looked at, nothing to do)."""
    return DiscardReport(gone=runtime.store.dead.delete([d.id for d in letters]))
