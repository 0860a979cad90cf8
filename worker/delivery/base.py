"""What every delivery backend accepts, returns and raises.

A backend hands one rendered email to the outside world (a file in the outbox, or
SendGrid's v3 Mail Send API). It never retries: the queue actor that calls it owns
retries, backoff and the idempotency ledger, so a backend only has to *classify* each
failure correctly:

* :class:`~worker.errors.TransientDeliveryError` — nothing was accepted; try again later
  (429, 5xx, connection refused, DNS failure, a full disk).
* :class:`~worker.errors.PermanentDeliveryError` — the message is refused for good
  (4xx other than 408/429, a malformed message); retrying cannot help.
* :class:`~worker.errors.AccountFaultError` — the account, key or sender is refused
  (SendGrid 401/403): no message can go out until it is fixed; delivery pauses.
* :class:`~worker.errors.OutcomeUnknownError` — the request left us but no answer came
  back (timeout, connection dropped); the provider may or may not have accepted it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from worker.errors import DeliveryError, OutcomeUnknownError

#: Value of the ``List-Unsubscribe-Post`` header (RFC 8058 one-click unsubscribe).
ONE_CLICK = "List-Unsubscribe=One-Click"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# File names are limited to 255 bytes on common file systems; keep room for the hash,
# the ".eml" suffix and the temp-file prefix.
_MAX_NAME = 180


@dataclass(frozen=True)
class Message:
    """One rendered email, ready for a backend.

    Attributes:
        key: Idempotency key, unique per (enrollment, step), e.g.
            ``"lead-1.value-first.1.case-study"``. The caller guarantees the characters
            ``[A-Za-z0-9._-]``; backends still sanitize it before using it in a file name.
        to_email: Recipient address.
        to_name: Recipient display name, if any.
        from_email: Sender address (``NURTURE_FROM_EMAIL``).
        from_name: Sender display name (``NURTURE_FROM_NAME``), if any.
        subject: Subject line (any Unicode).
        text: Plain-text body (required).
        html: HTML body, if the template has one.
        unsubscribe_url: One-click unsubscribe URL (https per the contract), sent as
            ``List-Unsubscribe``.
        lead_id: The CRM's lead id (``X-Nurture-Lead`` / ``lead_id``).
        sequence: Sequence id (``X-Nurture-Sequence`` / ``sequence``).
        step: Step id (``X-Nurture-Step`` / ``step``).
        categories: SendGrid categories (outbox: ``X-Nurture-Categories``).
        reply_to_email: Where replies go (``Reply-To``), when not to the From address.
        reply_to_name: The display name of ``reply_to_email``.
        track_opens: SendGrid open tracking (a pixel in the HTML part).
        track_clicks: SendGrid click tracking (links rewritten through SendGrid).
        unsubscribe_mailto: A ``mailto:`` URL listed after the https link in
            ``List-Unsubscribe`` (RFC 2369), when an unsubscribe mailbox is configured.
        generation: The enrollment's generation (``custom_args.generation``), so the
            Event Webhook can tell this enrollment's opens and clicks from an earlier
            one's; 0 when unknown.
        variant: The step's A/B variant id (``custom_args.variant``), "" for none.
        internal: A ``notify:`` email to a person inside the company about the lead:
            no ``List-Unsubscribe`` (``unsubscribe_url`` is ""), no tracking, and no
            lead in SendGrid's ``custom_args`` (its events are not the lead's).
    """

    key: str
    to_email: str
    to_name: str | None
    from_email: str
    from_name: str | None
    subject: str
    text: str
    html: str | None
    unsubscribe_url: str
    lead_id: str
    sequence: str
    step: str
    categories: tuple[str, ...] = ()
    reply_to_email: str | None = None
    reply_to_name: str | None = None
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe_mailto: str | None = None
    generation: int = 0
    variant: str = ""
    internal: bool = False


@dataclass(frozen=True)
class SendResult:
    """What a backend reports for a message it accepted.

    Attributes:
        provider_id: The backend's id for the message (SendGrid's ``X-Message-Id``, the
            outbox's ``Message-ID``), when it gave one.
        duplicate: True when the backend itself saw this key before (the outbox file
            already existed) and did nothing this time.
    """

    provider_id: str | None
    duplicate: bool = False


class Delivery(Protocol):
    """A delivery backend. Implementations must be safe to call from many threads.

    Subclass it explicitly to inherit the default :meth:`send_many`.
    """

    #: Short backend name for logs and metrics: ``"outbox"`` or ``"sendgrid"``.
    name: str

    def send(self, message: Message) -> SendResult:
        """Hand one message to the backend, exactly once from the backend's view.

        Raises:
            TransientDeliveryError: Not accepted; may succeed later.
            PermanentDeliveryError: Refused for good.
            OutcomeUnknownError: May or may not have been accepted.
        """
        ...

    def send_many(self, messages: Sequence[Message]) -> list[SendResult | DeliveryError]:
        """Send several messages; one result or error per message, in order.

        Never raises because of one bad message: its error takes its place in the list.
        """
        return send_each(self, messages)

    def probe(self, reason: str = "") -> str | None:
        """Check whether the backend can send again after an account fault.

        Args:
            reason: Why delivery paused (the fault's text), so a backend can check
                what failed.

        Returns:
            None when it can (the default: a backend without accounts always can);
            else what is still wrong.
        """
        return None

    def close(self) -> None:
        """Release resources; the backend must not be used afterwards."""
        ...


def send_each(delivery: Delivery, messages: Sequence[Message]) -> list[SendResult | DeliveryError]:
    """Send messages one by one, collecting each outcome instead of raising.

    An unexpected exception (a bug, not a classified failure) becomes an
    :class:`~worker.errors.OutcomeUnknownError`: we cannot tell whether the message got
    out, so the caller must treat it as "check before resending", never as "not sent".

    Args:
        delivery: The backend to use.
        messages: The messages, in the order their results are returned.

    Returns:
        One :class:`SendResult` or :class:`~worker.errors.DeliveryError` per message.
    """
    results: list[SendResult | DeliveryError] = []
    for message in messages:
        try:
            results.append(delivery.send(message))
        except DeliveryError as exc:
            results.append(exc)
        except Exception as exc:  # one bad message must not lose the batch's results
            error = OutcomeUnknownError(f"{delivery.name}: unexpected error: {exc!r}")
            error.__cause__ = exc
            results.append(error)
    return results


def key_digest(key: str) -> str:
    """Return a stable hex digest of an idempotency key (for ids and collision-free names)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def safe_file_stem(key: str) -> str:
    """Turn an idempotency key into a safe, unique file-name stem.

    Keys already made of ``[A-Za-z0-9._-]`` (what callers guarantee) are used as they
    are, so an operator can find a message by its key. Anything else is replaced by
    ``_`` and a short digest of the original key is appended, so two different keys
    can never map to the same file (which the outbox would take for a duplicate).

    Args:
        key: The idempotency key.

    Returns:
        A non-empty stem without path separators or a leading dot.
    """
    stem = _UNSAFE.sub("_", key)
    if stem.startswith("."):
        # No hidden files, and never "." or "..".
        stem = "_" + stem[1:]
    if stem != key or not stem or len(stem) > _MAX_NAME:
        stem = f"{stem[:_MAX_NAME]}-{key_digest(key)[:16]}"
    return stem


def unsubscribe_mailto(mailbox: str, unsubscribe_url: str) -> str:
    """The ``mailto:`` for ``List-Unsubscribe``: the mailbox, with the lead's token in
    the subject so a reply to it can be matched to the lead (RFC 2369, RFC 6068)."""
    token = unsubscribe_url.rstrip("/").rpartition("/")[2]
    return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"


def list_unsubscribe(message: Message) -> str:
    """The ``List-Unsubscribe`` value: the https one-click link first (RFC 8058), then
    the ``mailto:`` when there is one (RFC 2369: angle brackets, comma-separated)."""
    value = f"<{header_safe(message.unsubscribe_url)}>"
    if message.unsubscribe_mailto:
        value += f", <{header_safe(message.unsubscribe_mailto)}>"
    return value


def header_safe(value: str) -> str:
    """Collapse CR/LF and other control characters so a value fits on one header line.

    Header injection is impossible anyway (``email`` refuses CR/LF), but a lead id or
    step id with a stray newline should not make the whole message undeliverable.
    """
    return re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()
