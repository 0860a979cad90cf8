"""``webhook:`` steps: a signed JSON POST per touch (e.g. to create a task in the CRM).

The request (documented for receivers in docs/sequences.md#webhook-steps)::

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <key>
    X-Nurture-Signature: sha256=<hex HMAC-SHA256(NURTURE_WEBHOOK_SECRET, raw body)>

    {"id": <key>, "type": "nurture.webhook", "sent_at": ..., "sequence": ..., "step": ...,
     "lead": {...}, "trigger": {...}}

The key is the touch's ledger field and the lead id (``<sequence>.<generation>.<step>.
<lead>``, as the outbox's ``X-Nurture-Key``): the same for every attempt of one touch,
so a receiver drops repeats.

Outcomes, classified like an email provider's answers (:mod:`worker.delivery.base`): a
2xx is sent; 408, 429, 5xx, a refused connection and a timeout are tried again later
with backoff (the receiver dedupes by the key, so a POST that timed out after arriving
does no harm); any other answer is refused for good (a dead letter with the status and
the start of the body). The ledger makes the touch at most one accepted POST from our
side; a worker that dies mid-request leaves it outcome-unknown, as for emails.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.delivery import SendResult
from worker.delivery.sendgrid import retry_after_seconds
from worker.errors import (
    DeliveryError,
    OutcomeUnknownError,
    PermanentDeliveryError,
    Problem,
    TransientDeliveryError,
    did_you_mean,
)
from worker.sequences.model import Catalog, Step

SIGNATURE_HEADER = "X-Nurture-Signature"
KEY_HEADER = "Idempotency-Key"
PAYLOAD_TYPE = "nurture.webhook"
#: Answers tried again later; any other non-2xx is refused for good.
RETRIED = frozenset({408, 429})
#: POSTs of one batch in flight at once.
MAX_PARALLEL = 8


@dataclass(frozen=True)
class WebhookCall:
    """One signed POST, ready to go.

    Attributes:
        key: The idempotency key (also the payload's ``id``).
        url: Where it goes.
        body: The raw JSON body (what the signature covers).
        signature: ``sha256=<hex>``.
    """

    key: str
    url: str
    body: bytes
    signature: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "nurture-worker",
            KEY_HEADER: self.key,
            SIGNATURE_HEADER: self.signature,
        }


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def target_url(step: Step, targets: Mapping[str, str]) -> str | None:
    """The URL a webhook step posts to (None: its target is not configured)."""
    assert step.webhook is not None
    if step.webhook.url is not None:
        return step.webhook.url
    return targets.get(step.webhook.target or "")


def build_call(
    key: str,
    url: str,
    secret: str,
    fields: Mapping[str, Any],
    now: datetime | None = None,
) -> WebhookCall:
    """The signed POST for one touch.

    Args:
        key: The idempotency key.
        fields: ``sequence``, ``step``, ``generation``, ``lead``, ``trigger``.
        now: When it is sent (``sent_at``).
    """
    sent_at = (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    payload = {"id": key, "type": PAYLOAD_TYPE, "sent_at": sent_at, **fields}
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str).encode()
    return WebhookCall(key, url, body, sign(secret, body))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is (refused for good): urllib would repeat a
    redirected POST as a GET, and a signed request belongs at the URL configured."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(call: WebhookCall, timeout: float) -> SendResult | DeliveryError:
    """POST once and classify the answer (never raises)."""
    request = urllib.request.Request(call.url, call.body, call.headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return SendResult(provider_id=f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        status = exc.code
        snippet = exc.read(300).decode("utf-8", "replace").strip()
        said = f"{call.url} answered HTTP {status}" + (f": {snippet}" if snippet else "")
        if status in RETRIED or status >= 500:
            return TransientDeliveryError(said, retry_after_seconds(exc.headers))
        return PermanentDeliveryError(said)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # Refused, unreachable, timed out, cut off: retried; the key makes a repeat harmless.
        reason = getattr(exc, "reason", exc)
        return TransientDeliveryError(f"{call.url}: {reason}")
    except Exception as exc:  # a bug, not an answer: it may have arrived
        return OutcomeUnknownError(f"{call.url}: unexpected error: {exc!r}")


def post_many(calls: list[WebhookCall], timeout: float) -> list[SendResult | DeliveryError]:
    """POST several calls at once (a slow receiver holds up one thread, not the batch);
    one result per call, in order."""
    if len(calls) <= 1:
        return [post(call, timeout) for call in calls]
    with ThreadPoolExecutor(max_workers=min(len(calls), MAX_PARALLEL)) as pool:
        return list(pool.map(lambda call: post(call, timeout), calls))


def check_webhooks(catalog: Catalog, secret: bool, targets: Mapping[str, str]) -> list[Problem]:
    """Webhook steps that cannot work with these settings (file:line and the fix)."""
    problems: list[Problem] = []
    for sequence in catalog.sequences.values():
        for step in sequence.steps:
            hook = step.webhook
            if hook is None:
                continue
            if not secret:
                problems.append(
                    Problem(
                        sequence.file,
                        hook.line,
                        f"webhook step `{step.id}` cannot be signed: NURTURE_WEBHOOK_SECRET "
                        "is not set",
                        "set NURTURE_WEBHOOK_SECRET (a long random string the receiver "
                        "also knows) in the environment or .env",
                    )
                )
            if hook.target is not None and hook.target not in targets:
                known = ", ".join(sorted(targets)) or "none"
                problems.append(
                    Problem(
                        sequence.file,
                        hook.line,
                        f"webhook target {hook.target!r} is not in NURTURE_WEBHOOK_TARGETS "
                        f"(configured: {known})",
                        f"{did_you_mean(hook.target, targets)}add `{hook.target}=https://...` to "
                        "NURTURE_WEBHOOK_TARGETS, or write `url:` on the step",
                    )
                )
    return problems
