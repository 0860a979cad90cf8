"""One error tree for the whole worker.

Errors a marketer sees name the file, the line and the fix (:class:`Problem`);
errors an operator sees name the setting or the service. Errors the HTTP service
answers with (:class:`ApiError` and its subclasses) carry their status, their
machine-readable code and their headers; ``worker/http/errors.py`` shapes them into
the JSON body every 4xx/5xx answer has.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake found in a sequence, fit rule, content item or template.

    Attributes:
        file: Path of the file, as the user would type it (relative where possible).
        line: 1-based line number; 0 when the problem concerns the whole file.
        message: What is wrong, in plain words.
        fix: What to do about it.
    """

    file: str
    line: int
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}" + (f" — {self.fix}" if self.fix else "")


def did_you_mean(
    word: str, choices: Iterable[str], *, cutoff: float = 0.6, n: int = 1, code: bool = True
) -> str:
    """The "did you mean ...? " start of a fix for a misspelled name, or "" when none is close.

    The one home of did-you-mean for every file marketers and operators edit (sequences,
    fit rules, content, templates, CRM mappings), so every suggestion reads the same.

    Args:
        word: What the user wrote.
        choices: The names that exist.
        cutoff: How close a choice must be (0..1, :func:`difflib.get_close_matches`);
            0 suggests the closest choice whatever it is.
        n: Up to how many choices to offer (joined with "or").
        code: Put the choices in backticks; False for names the surrounding
            message writes bare (event types such as lead.created, operators such as gte).

    Returns:
        ``"did you mean `x`? "`` (note the trailing space), or ``""``.
    """
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    if not close:
        return ""
    quoted = [f"`{c}`" if code else c for c in close]
    return f"did you mean {' or '.join(quoted)}? "


class NurtureError(Exception):
    """Raised for any error of this package; the root of the tree."""


class SettingsError(NurtureError):
    """Raised when a setting is missing or invalid; the message names the variable."""


class CatalogError(NurtureError):
    """Raised when sequences, fit rules or templates are invalid.

    Attributes:
        problems: Every problem found, each naming file, line and fix.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class EventError(NurtureError):
    """Raised when an inbound event is malformed.

    Attributes:
        index: Position of the event in its batch (0-based).
        reason: Which field is wrong and why.
    """

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"event {index}: {reason}")


class RenderError(NurtureError):
    """Raised when a template cannot be rendered for a lead (file and line when known)."""


class DeliveryError(NurtureError):
    """Raised when a message could not be handed to the delivery backend."""


class TransientDeliveryError(DeliveryError):
    """Raised when delivery failed but may succeed later (429, 5xx, network).

    Attributes:
        retry_after: Seconds the provider asked us to wait, when it said so.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Raised when the provider refused the message for good (4xx other than 429)."""


class AccountFaultError(DeliveryError):
    """Raised when the provider refuses every message because of the account, not the message.

    A revoked or wrong API key (SendGrid 401), credits used up (401 "Maximum credits
    exceeded"), a key without the Mail Send permission or a sender address that is not a
    verified Sender Identity (403). Retrying one message cannot help and failing it would
    be wrong: delivery pauses for every worker until the account works again.
    """


class OutcomeUnknownError(DeliveryError):
    """Raised when the request may or may not have reached the provider.

    The connection dropped after the request was sent, or the answer timed out.
    """


class ContentExhaustedError(NurtureError):
    """Raised when a step with ``needs_content: true`` finds no content piece the lead
    has not had in the email's language: the enrollment ends instead of sending."""


class StoreUnavailableError(NurtureError):
    """Raised when Redis cannot be reached."""


class BrokerUnavailableError(StoreUnavailableError):
    """Raised when the message broker (``NURTURE_BROKER_URL``) cannot be reached.

    A kind of store outage: callers answering 503 for Redis answer it for this too.
    """


class MappingError(NurtureError):
    """Raised when a CRM mapping file is missing or invalid.

    Attributes:
        problems: Every problem found, each naming the file, the line and the fix.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PoisonEvent(NurtureError):
    """Raised when an event can never be processed (kept as a dead letter)."""


class ContentCallError(NurtureError):
    """Raised when a template calls ``content(...)`` with a kind that does not exist.

    Attributes:
        message: What is wrong with the call.
        fix: What to write instead.
    """

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class HelperCallError(NurtureError):
    """Raised when a template calls a helper where it cannot work.

    For example ``text_as_html()`` outside the ``html`` block, before the text part
    exists.

    Attributes:
        message: What is wrong with the call.
        fix: What to write instead.
    """

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class ApiError(NurtureError):
    """Raised when an HTTP request is refused; carries the whole answer but its shape.

    Attributes:
        status: The HTTP status code (4xx or 5xx).
        code: Machine-readable reason, e.g. ``invalid_json`` (also a metrics label).
        message: What is wrong and how to fix it, for the sender's logs.
        errors: (index, reason) of each bad item of a batch, when there are any.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: list[tuple[int, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class BodyError(ApiError):
    """Raised when a request body is too large (413), not declared JSON (415) or bad JSON (400).

    Bad JSON means not UTF-8 (``invalid_utf8``), empty (``empty_body``), not JSON
    (``invalid_json``) or nested deeper than the limit (``too_deep``).
    """


class SignatureError(ApiError):
    """Raised when a request's signature is missing, malformed, expired or wrong (401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(401, code, message, headers={"WWW-Authenticate": "Signature"})


class PayloadError(ApiError):
    """Raised when a body is not the CRM's webhook shape at all (400 ``invalid_payload``)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "invalid_payload", message)
