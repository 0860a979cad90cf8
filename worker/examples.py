"""``nurture examples``: the committed matrix of rendered emails in ``docs/examples/``.

Every shipped step, for each kind of lead it can reach (inbound, referral with a
strong and with a weak relationship, outbound), in English, Danish and Finnish, once
with every field known (and a person signing) and once with only an id and an
address. Decline steps are rendered for every reason of ``fit.yaml`` (full lead) and
without a reason (minimal lead). One ``.txt`` per email (From, Reply-To, Subject and
the text part) and a ``README.md`` index, so reviewers read what leads will read.
A test regenerates the matrix and fails when the committed one is out of date.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.catalog import LoadedCatalog
from worker.errors import RenderError
from worker.reach import Reach, notify_message
from worker.senders import Address, SenderDefaults, resolve
from worker.sequences import condition_context
from worker.sequences.model import Sequence, Step

LANGUAGES = ("en", "da", "fi")
REFERRER = {"name": "Ole Holm", "company": "Holm & Co"}
#: path -> (lead source, referrer relationship or None for no referrer)
PATHS: dict[str, tuple[str, dict[str, str] | None]] = {
    "inbound": ("website", None),
    "referral-strong": ("referral", {"role": "colleague", "strength": "strong"}),
    "referral-weak": ("referral", {"role": "friend", "strength": "weak"}),
    "outbound": ("outbound", None),
}
FULL_SENDER = SenderDefaults(
    from_email="maria@acme.example",
    from_name="Maria Holm",
    name="Maria Holm",
    title="Partner",
    meeting_url="https://cal.acme.example/maria",
)
MINIMAL_SENDER = SenderDefaults(from_email="hello@acme.example", from_name="Acme")
POSTAL_ADDRESS = "Acme ApS, Vesterbrogade 1, 1620 København V, Denmark"
UNSUBSCRIBE_URL = "https://nurture.acme.example/unsubscribe/EXAMPLE"
#: Where notify steps go for these leads (none has an owner in the CRM).
NOTIFY_TO = "sales@acme.example"


@dataclass(frozen=True)
class Example:
    """One email of the matrix."""

    sequence: Sequence
    step: Step
    path: str
    language: str
    full: bool
    reason: str | None

    @property
    def file(self) -> str:
        """Its file under the examples folder."""
        fields = "full" if self.full else "minimal"
        reason = f"-{self.reason}" if self.reason else ""
        name = f"{self.path}-{self.language}-{fields}{reason}.txt"
        return f"{self.sequence.id}/{self.step.id}/{name}"


def _lead(example: Example) -> tuple[dict[str, Any], dict[str, Any]]:
    source, relationship = PATHS[example.path]
    lead: dict[str, Any] = {
        "id": "example-lead",
        "email": "ann@berg.example",
        "locale": example.language,
        "source": source,
        "attributes": {},
    }
    data: dict[str, Any] = {}
    if example.full:
        lead.update(first_name="Ann", last_name="Berg", company="Berg & Co")
        lead["attributes"] = {"industry": "saas", "problem": "churn"}
    if relationship is not None:
        referrer: dict[str, Any] = dict(REFERRER)
        if example.full:
            referrer["relationship"] = dict(relationship)
        data["referrer"] = referrer
    if example.reason:
        data["reason"] = example.reason
    return lead, data


def matrix(loaded: LoadedCatalog) -> Iterator[Example]:
    """Every example, in a stable order; combinations a trigger never takes are left out."""
    reasons = sorted({str(rule.reason) for rule in loaded.catalog.fit_rules})
    for sequence in sorted(loaded.catalog.sequences.values(), key=lambda s: s.id):
        decline = sequence.kind == "decline"
        for step in sequence.steps:
            if step.webhook is not None:
                continue  # posts JSON, no email to show
            for path in PATHS:
                # A notify goes to a person inside, in the default language, whatever
                # the lead's: shown once per path.
                languages = LANGUAGES[:1] if step.channel == "notify" else LANGUAGES
                for language in languages:
                    variants = [(True, r) for r in reasons] if decline else [(True, None)]
                    for full, reason in [*variants, (False, None)]:
                        example = Example(sequence, step, path, language, full, reason)
                        lead, data = _lead(example)
                        ctx = condition_context(lead, data)
                        if sequence.trigger_when and not sequence.trigger_when.matches(ctx):
                            continue
                        if step.when and not step.when.matches(ctx):
                            continue
                        yield example


def render_example(loaded: LoadedCatalog, example: Example) -> str:
    """The text of one example file."""
    if example.step.notify is not None:
        return _render_notify(loaded, example)
    lead, data = _lead(example)
    defaults = FULL_SENDER if example.full else MINIMAL_SENDER
    who = resolve(defaults, example.sequence.sender, lead)
    context = {
        "lead": lead,
        "event": {
            "id": "example-event",
            "type": example.sequence.trigger_event,
            "occurred_at": "2026-01-05T09:30:00Z",
            "data": data,
        },
        "sequence": {"id": example.sequence.id, "description": example.sequence.description},
        "step": {"id": example.step.id},
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "postal_address": POSTAL_ADDRESS,
        "sender": who.signature.as_context(),
    }
    renderer = loaded.renderer
    template = renderer.resolve(example.step.template, example.language)
    shown = template.relative_to(renderer.templates_dir).as_posix()
    try:
        email = renderer.render(example.step.template, example.language, context)
    except RenderError as exc:
        return f"Template: templates/{shown}\n\nDOES NOT RENDER: {exc}\n"
    lines = [
        f"Template: templates/{shown}",
        f"Lead: {_describe(example)}",
        f"From: {_show(who.from_)}",
    ]
    if who.reply_to:
        lines.append(f"Reply-To: {_show(who.reply_to)}")
    lines += [f"Subject: {email.subject}", "", email.text.rstrip("\n"), ""]
    return "\n".join(lines)


def _render_notify(loaded: LoadedCatalog, example: Example) -> str:
    """A notify step's internal email, as the lead's owner (here: nobody in the CRM, so
    ``NURTURE_NOTIFY_TO``) gets it."""
    lead, data = _lead(example)
    defaults = FULL_SENDER if example.full else MINIMAL_SENDER
    trigger = {"id": "example-event", "type": example.sequence.trigger_event, "data": data}
    reach = Reach(notify_to=NOTIFY_TO)
    key = f"{example.sequence.id}.1.{example.step.id}.{lead['id']}"
    renderer = loaded.renderer
    shown = renderer.resolve(example.step.template, None).relative_to(renderer.templates_dir)
    try:
        message = notify_message(
            renderer, example.sequence, example.step, lead, trigger, reach, defaults, key
        )
    except RenderError as exc:
        return f"Template: templates/{shown.as_posix()}\n\nDOES NOT RENDER: {exc}\n"
    lines = [
        f"Template: templates/{shown.as_posix()} (notify: an internal email, no footer)",
        f"Lead: {_describe(example)}",
        f"From: {_show(Address(message.from_email, message.from_name))}",
        f"To: {_show(Address(message.to_email, message.to_name))}",
        f"Subject: {message.subject}",
        "",
        message.text.rstrip("\n"),
        "",
    ]
    return "\n".join(lines)


def _show(address: Address) -> str:
    return f"{address.name} <{address.email}>" if address.name else address.email


def _describe(example: Example) -> str:
    fields = (
        "every field known, a person signs"
        if example.full
        else "only an id and an address, no sender name"
    )
    reason = f", declined for {example.reason}" if example.reason else ""
    return f"{example.path}, {example.language}, {fields}{reason}"


def write_examples(loaded: LoadedCatalog, out: Path) -> int:
    """Write the matrix into ``out`` (emptied first) and return how many emails it holds."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index = [
        "# Example emails",
        "",
        "Generated by `nurture examples` from the shipped sequences, templates and content;",
        "do not edit by hand. Regenerate after changing copy; CI fails when this folder is",
        "out of date. Columns: the lead's path, language, and fields (`full`: every field",
        "known and a person signs; `minimal`: only an id and an address).",
        "",
    ]
    count = 0
    current = ""
    for example in matrix(loaded):
        target = out / example.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_example(loaded, example), encoding="utf-8")
        heading = f"## {example.sequence.id} / {example.step.id} (`{example.step.template}`)"
        if heading != current:
            index += ["", heading, ""]
            current = heading
        index.append(f"- [{Path(example.file).name}]({example.file})")
        count += 1
    (out / "README.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return count
