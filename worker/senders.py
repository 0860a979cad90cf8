"""Who an email comes from, who gets the reply, and who signs it.

People buy from people: an email is signed by a person and a reply reaches a person.
One place decides, for one lead and one sequence, in this order (first known wins):

1. the lead's owner from the CRM (lead fields ``owner_name``, ``owner_email``,
   ``owner_title``, ``owner_meeting_url``, mapped in ``crm/*.yaml``);
2. the sequence's ``from`` (and ``reply_to``) in its YAML file;
3. the settings (``NURTURE_FROM_EMAIL``/``NURTURE_FROM_NAME`` for the From header,
   ``NURTURE_REPLY_TO``, and ``NURTURE_SENDER_NAME``/``NURTURE_SENDER_TITLE``/
   ``NURTURE_MEETING_URL`` for the signature).

An owner's address is used as From only when it is in the domain of the configured
From address (the domain authenticated at the provider); otherwise the email comes
from the configured address under the owner's name, and the reply goes to the owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.addresses import sendable_address

if TYPE_CHECKING:
    from worker.settings import Settings

#: Lead fields holding the owner (the CRM user responsible for the lead).
OWNER_FIELDS = ("owner_name", "owner_email", "owner_title", "owner_meeting_url")
#: Keys of a sequence's ``from`` (``email`` and ``name`` are the From header; ``title``
#: and ``meeting_url`` complete the signature of the person named).
FROM_KEYS = ("email", "name", "title", "meeting_url")
#: Keys of a sequence's ``reply_to``.
REPLY_TO_KEYS = ("email", "name")


@dataclass(frozen=True)
class Address:
    """An email address with an optional display name."""

    email: str
    name: str | None = None


@dataclass(frozen=True)
class Signature:
    """The person who signs: what templates see as ``sender``."""

    name: str | None = None
    title: str | None = None
    meeting_url: str | None = None
    email: str | None = None

    def as_context(self) -> dict[str, str]:
        """The template variable ``sender``: only the fields that are known."""
        fields = {
            "name": self.name,
            "title": self.title,
            "meeting_url": self.meeting_url,
            "email": self.email,
        }
        return {k: v for k, v in fields.items() if v}


@dataclass(frozen=True)
class SequenceSender:
    """A sequence's own ``from`` and ``reply_to`` (each None when the file has none)."""

    from_: Address | None = None
    reply_to: Address | None = None
    title: str | None = None
    meeting_url: str | None = None


@dataclass(frozen=True)
class SenderDefaults:
    """The sender settings (see the module docstring)."""

    from_email: str
    from_name: str | None = None
    reply_to: str | None = None
    name: str | None = None
    title: str | None = None
    meeting_url: str | None = None


def defaults_from(settings: Settings) -> SenderDefaults:
    """The sender settings of ``settings`` (``from_email`` empty when unset)."""
    return SenderDefaults(
        from_email=settings.from_email or "",
        from_name=settings.from_name,
        reply_to=settings.reply_to,
        name=settings.sender_name,
        title=settings.sender_title,
        meeting_url=settings.meeting_url,
    )


@dataclass(frozen=True)
class ResolvedSender:
    """Everything about the sender of one email."""

    from_: Address
    reply_to: Address | None
    signature: Signature


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def resolve(
    defaults: SenderDefaults, sequence: SequenceSender | None, lead: Mapping[str, Any]
) -> ResolvedSender:
    """Decide From, Reply-To and the signature of one email (see the module docstring).

    Args:
        defaults: The sender settings.
        sequence: The sequence's ``from``/``reply_to``, if it has any.
        lead: The lead's stored fields (``owner_*`` when the CRM maps them).
    """
    seq = sequence or SequenceSender()
    base_email = seq.from_.email if seq.from_ else defaults.from_email
    from_name = (seq.from_.name if seq.from_ else None) or defaults.from_name or defaults.name
    # The settings' title and meeting link belong to the settings' person: a sequence
    # signed by someone else uses only what its own `from` gives.
    same_person = seq.from_ is None or seq.from_.name in (None, defaults.name)
    signature = Signature(
        name=(seq.from_.name if seq.from_ else None) or defaults.name,
        title=seq.title or (defaults.title if same_person else None),
        meeting_url=seq.meeting_url or (defaults.meeting_url if same_person else None),
        email=base_email,
    )
    reply_to = seq.reply_to or (Address(defaults.reply_to) if defaults.reply_to else None)
    owner_email, owner_name = _owner_email(lead), _text(lead.get("owner_name"))
    if owner_email or owner_name:
        # The owner signs; only their own fields, never another person's title or link.
        signature = Signature(
            name=owner_name,
            title=_text(lead.get("owner_title")),
            meeting_url=_text(lead.get("owner_meeting_url")),
            email=owner_email or base_email,
        )
        from_name = owner_name or from_name
        if owner_email:
            reply_to = Address(owner_email, owner_name)
            if _domain(owner_email) == _domain(base_email):
                base_email = owner_email
    return ResolvedSender(Address(base_email, from_name), reply_to, signature)


def _owner_email(lead: Mapping[str, Any]) -> str | None:
    value = _text(lead.get("owner_email"))
    if value is None:
        return None
    try:
        return sendable_address(value)
    except ValueError:
        # A broken owner address in the CRM must not stop the email: the configured
        # sender is used instead.
        return None
