"""What ``notify:`` and ``webhook:`` steps send: whom a notify goes to, its rendered
email, and a webhook's signed call (see :mod:`worker.sequences.actions` for the YAML,
:mod:`worker.webhooks` for the request). Shared by the sender, ``nurture preview`` and
``nurture examples``, so each shows what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.delivery import Message
from worker.errors import Problem, RenderError
from worker.rendering import Renderer
from worker.rendering.renderer import locale_dirs, template_candidates
from worker.senders import Address, SenderDefaults
from worker.sequences import Catalog
from worker.sequences.model import Sequence, Step
from worker.webhooks import WebhookCall, build_call, target_url


@dataclass(frozen=True)
class Reach:
    """The settings of notify and webhook steps.

    Attributes:
        notify_to: ``NURTURE_NOTIFY_TO``: notified when the lead has no owner.
        notify_locale: ``NURTURE_NOTIFY_LOCALE``: the language of notify emails whose
            step does not say (None: ``NURTURE_DEFAULT_LOCALE``).
        webhook_secret: ``NURTURE_WEBHOOK_SECRET``: the key of the signature.
        webhook_targets: ``NURTURE_WEBHOOK_TARGETS``: name -> URL.
        webhook_timeout: ``NURTURE_WEBHOOK_TIMEOUT``: seconds per POST.
    """

    notify_to: str | None = None
    webhook_secret: str = ""
    webhook_targets: Mapping[str, str] = field(default_factory=dict)
    webhook_timeout: float = 10.0
    notify_locale: str | None = None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def notify_recipient(
    step: Step, lead: Mapping[str, Any], reach: Reach, defaults: SenderDefaults
) -> tuple[Address, str]:
    """Whom a notify step's email goes to, and why (for the timeline and preview).

    The step's ``to:``, else the lead's owner (``owner_email`` from the CRM), else
    ``NURTURE_NOTIFY_TO``, else ``NURTURE_REPLY_TO``, else the From address: a notify
    always reaches someone.
    """
    assert step.notify is not None
    owner_name = _text(lead.get("owner_name"))
    if step.notify.to:
        return Address(step.notify.to), "the step's `to`"
    owner = _text(lead.get("owner_email"))
    if owner:
        return Address(owner, owner_name), "the lead's owner"
    for address, why in (
        (reach.notify_to, "NURTURE_NOTIFY_TO (the lead has no owner)"),
        (defaults.reply_to, "NURTURE_REPLY_TO (no owner, no NURTURE_NOTIFY_TO)"),
    ):
        if address:
            return Address(address), why
    return Address(defaults.from_email, defaults.from_name), "the From address (no one else set)"


def notify_locale(step: Step, reach: Reach) -> str | None:
    """The language of a notify step's email: the step's ``locale``, else
    ``NURTURE_NOTIFY_LOCALE``; None: the default language."""
    assert step.notify is not None
    return step.notify.locale or reach.notify_locale


def check_notify_locales(
    catalog: Catalog, templates_dir: Path, default_locale: str, setting: str | None
) -> list[Problem]:
    """Notify steps whose language (the step's ``locale``, else ``NURTURE_NOTIFY_LOCALE``)
    has no template of theirs: they would go out in the default language unnoticed."""
    problems: list[Problem] = []
    default = locale_dirs(default_locale, default_locale)[-1:]
    for sequence in catalog.sequences.values():
        for step in sequence.steps:
            if step.notify is None:
                continue
            locale = step.notify.locale or setting
            if not locale:
                continue
            if locale_dirs(locale, default_locale)[-1:] == default:
                continue  # the default language: the templates folder's own files serve
            # The renderer's order, without its last try (the templates folder's own file).
            tried = template_candidates(step.template, locale, default_locale)[:-1]
            if any((templates_dir / relative).is_file() for relative in tried):
                continue
            why = "its `locale`" if step.notify.locale else "NURTURE_NOTIFY_LOCALE"
            problems.append(
                Problem(
                    sequence.file,
                    step.line,
                    f"notify step `{step.id}` is in {locale!r} ({why}) but "
                    f"{templates_dir / tried[-1]} does not exist, so it would go out in "
                    f"the default language ({default_locale})",
                    f"add {templates_dir / tried[-1]}, or choose a language the templates have",
                )
            )
    return problems


def notify_context(
    sequence: Sequence,
    step: Step,
    lead: Mapping[str, Any],
    trigger: Mapping[str, Any],
    recipient: Address,
) -> dict[str, Any]:
    """A notify template's variables: the lead, the trigger event, and ``recipient``
    (whom it goes to: ``recipient.name`` when known, ``recipient.email``)."""
    to = {"email": recipient.email}
    if recipient.name:
        to["name"] = recipient.name
    return {
        "lead": dict(lead),
        "event": dict(trigger),
        "sequence": {"id": sequence.id, "description": sequence.description},
        "step": {"id": step.id},
        "recipient": to,
        "sender": {},
        "unsubscribe_url": "",
        "postal_address": "",
    }


def notify_message(
    renderer: Renderer,
    sequence: Sequence,
    step: Step,
    lead: Mapping[str, Any],
    trigger: Mapping[str, Any],
    reach: Reach,
    defaults: SenderDefaults,
    key: str,
) -> Message:
    """The internal email of a notify step, in its language (:func:`notify_locale`).

    Raises:
        RenderError: When the template does not render for this lead.
    """
    recipient, _why = notify_recipient(step, lead, reach, defaults)
    context = notify_context(sequence, step, lead, trigger, recipient)
    locale = notify_locale(step, reach)
    email = renderer.render(step.template, locale, context, internal=True)
    return Message(
        key=key,
        to_email=recipient.email,
        to_name=recipient.name,
        from_email=defaults.from_email,
        from_name=defaults.from_name,
        subject=email.subject,
        text=email.text,
        html=None,
        unsubscribe_url="",
        lead_id=str(lead.get("id", "")),
        sequence=sequence.id,
        step=step.id,
        internal=True,
    )


def webhook_call(
    sequence: Sequence,
    step: Step,
    lead: Mapping[str, Any],
    trigger: Mapping[str, Any],
    reach: Reach,
    key: str,
    generation: int,
    now: datetime | None = None,
) -> WebhookCall:
    """The signed POST of a webhook step.

    Raises:
        RenderError: When its target is not configured or no secret is set (``nurture
            validate`` says so first; settings can change under a running catalog).
    """
    url = target_url(step, reach.webhook_targets)
    if url is None or not reach.webhook_secret:
        missing = "NURTURE_WEBHOOK_SECRET" if url else "its target in NURTURE_WEBHOOK_TARGETS"
        raise RenderError(f"webhook step {step.id!r}: {missing} is not set")
    fields = {
        "sequence": sequence.id,
        "step": step.id,
        "generation": generation,
        "lead": dict(lead),
        "trigger": dict(trigger),
    }
    return build_call(key, url, reach.webhook_secret, fields, now)
