"""One error tree for the whole worker.

Errors a marketer sees name the file, the line and the fix (:class:`Problem`);
errors an operator sees name the setting or the service.
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


class OutcomeUnknownError(DeliveryError):
    """Raised when the request may or may not have reached the provider (connection
    dropped after the request was sent, timeout while waiting for the answer)."""


class StoreUnavailableError(NurtureError):
    """Raised when Redis cannot be reached."""
