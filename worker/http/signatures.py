"""Request signatures: ours (``X-Nurture-Signature``), HubSpot's v3, Pipedrive's basic
auth, and SendGrid's signed Event Webhook (ECDSA).

Our scheme, for ``POST /events`` and the CRM adapters::

    X-Nurture-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]
    v1 = hex(HMAC-SHA256(secret, "<t>." + raw body))

Several ``v1`` values may be given (the sender signs with old and new secret while a
secret is rotated) and several secrets may be configured (the receiver accepts both
while senders move over); one match between any given value and any secret is enough.
A ``t`` more than five minutes away from our clock is refused, so a captured request
cannot be replayed later. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from worker.errors import SignatureError

SIGNATURE_HEADER = "X-Nurture-Signature"
TOLERANCE_SECONDS = 300
# More than this many v1 values is not rotation but an attempt to make us compute a lot.
MAX_SIGNATURES = 8
MAX_HEADER_LENGTH = 2048

HUBSPOT_SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DIGITS = re.compile(r"^[0-9]{1,15}$")


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` value for one secret: HMAC-SHA256 over ``b"<t>." + body``."""
    return hmac.new(
        secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()


def sign(secrets: str | Sequence[str], body: bytes, timestamp: int) -> str:
    """Build an ``X-Nurture-Signature`` header value (one ``v1`` per secret).

    Args:
        secrets: One secret, or several while rotating.
        body: The exact bytes that will be sent.
        timestamp: Unix seconds, normally the current time.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    parts = [f"t={timestamp}"] + [f"v1={compute_signature(s, timestamp, body)}" for s in keys]
    return ",".join(parts)


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """Split ``t=<unix>,v1=<hex>[,v1=<hex>]`` into the timestamp and the hex values.

    Unknown ``key=value`` parts (a future ``v2``) are skipped, so senders can add a
    newer scheme before we support it.

    Raises:
        SignatureError: When the header is malformed.
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("signature_malformed", f"{SIGNATURE_HEADER} is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(
                "signature_malformed",
                f"{SIGNATURE_HEADER} must look like t=<unix seconds>,v1=<hex>; got {part!r}",
            )
        if key == "t":
            if timestamp is not None or not _DIGITS.match(value):
                raise SignatureError(
                    "signature_malformed", f"{SIGNATURE_HEADER}: t must be one unix time"
                )
            timestamp = int(value)
        elif key == "v1":
            if not _HEX64.match(value):
                raise SignatureError(
                    "signature_malformed",
                    f"{SIGNATURE_HEADER}: v1 must be 64 hex digits (HMAC-SHA256)",
                )
            signatures.append(value.lower())
    if timestamp is None:
        raise SignatureError("signature_malformed", f"{SIGNATURE_HEADER} has no t=<unix seconds>")
    if not signatures:
        raise SignatureError("signature_malformed", f"{SIGNATURE_HEADER} has no v1=<hex>")
    if len(signatures) > MAX_SIGNATURES:
        raise SignatureError(
            "signature_malformed", f"{SIGNATURE_HEADER}: at most {MAX_SIGNATURES} v1 values"
        )
    return timestamp, signatures


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> None:
    """Check an ``X-Nurture-Signature`` header against the raw body.

    Args:
        header: The header value (None when absent).
        body: The raw request body, exactly as received.
        secrets: Every secret currently accepted (several during rotation).
        now: The current unix time.
        tolerance: Largest accepted distance between ``t`` and ``now``, in seconds.

    Raises:
        SignatureError: Naming what is wrong.
    """
    if not secrets:
        raise SignatureError(
            "no_secrets",
            "no webhook secret is configured (NURTURE_WEBHOOK_SECRETS), so every request "
            "is refused",
        )
    if not header:
        raise SignatureError(
            "signature_missing",
            f"missing {SIGNATURE_HEADER} header; sign the body as described in docs/http.md",
        )
    timestamp, given = parse_signature_header(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            "signature_expired",
            f"{SIGNATURE_HEADER} t={timestamp} is more than {int(tolerance)} s from the "
            f"server's time ({int(now)}); sign each request when you send it and keep the "
            "sender's clock in sync",
        )
    expected = [compute_signature(secret, timestamp, body).encode("ascii") for secret in secrets]
    # Compare every pair without stopping early, so timing says nothing about which matched.
    matched = False
    for value in given:
        for candidate in expected:
            matched |= hmac.compare_digest(value.encode("ascii"), candidate)
    if not matched:
        raise SignatureError(
            "signature_mismatch",
            f"{SIGNATURE_HEADER} does not match the body: wrong secret, or the body was "
            "changed after signing (sign the exact bytes you send)",
        )


# -- HubSpot v3 -----------------------------------------------------------------------

# HubSpot signs the URI with these characters decoded (its docs list exactly these).
_HUBSPOT_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def hubspot_uri(public_url: str, path: str, query: str) -> str:
    """The URI HubSpot signed: our public base URL, the path and the query."""
    uri = public_url.rstrip("/") + path + (f"?{query}" if query else "")
    for encoded, plain in _HUBSPOT_DECODE.items():
        uri = uri.replace(encoded, plain).replace(encoded.lower(), plain)
    return uri


def hubspot_v3_signature(client_secret: str, method: str, uri: str, body: bytes, ts: str) -> str:
    """HubSpot's v3 signature: base64(HMAC-SHA256(secret, method + uri + body + ts))."""
    message = method.encode() + uri.encode("utf-8") + body + ts.encode("ascii")
    digest = hmac.new(client_secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_hubspot_v3(
    signature: str | None,
    timestamp_ms: str | None,
    *,
    method: str,
    uri: str,
    body: bytes,
    client_secret: str,
    now: float,
) -> None:
    """Check HubSpot's ``X-HubSpot-Signature-v3`` (for ``POST /events/hubspot``).

    Raises:
        SignatureError: When headers are missing, the timestamp is over five minutes
            old, or the signature does not match.
    """
    if not signature or not timestamp_ms:
        raise SignatureError(
            "signature_missing",
            f"missing {HUBSPOT_SIGNATURE_HEADER} / {HUBSPOT_TIMESTAMP_HEADER}",
        )
    if not _DIGITS.match(timestamp_ms):
        raise SignatureError("signature_malformed", f"{HUBSPOT_TIMESTAMP_HEADER} must be ms")
    if abs(now - int(timestamp_ms) / 1000) > TOLERANCE_SECONDS:
        raise SignatureError(
            "signature_expired", f"{HUBSPOT_TIMESTAMP_HEADER} is more than 5 minutes off"
        )
    expected = hubspot_v3_signature(client_secret, method, uri, body, timestamp_ms)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise SignatureError(
            "signature_mismatch",
            f"{HUBSPOT_SIGNATURE_HEADER} does not match (client secret, or "
            "NURTURE_PUBLIC_URL differs from the URL HubSpot calls)",
        )


# -- Basic auth (Pipedrive) -----------------------------------------------------------


def verify_basic_auth(authorization: str | None, expected: str) -> None:
    """Check ``Authorization: Basic`` against ``user:password`` (Pipedrive's webhook auth).

    Raises:
        SignatureError: When absent or wrong.
    """
    if not authorization or not authorization.lower().startswith("basic "):
        raise SignatureError("signature_missing", "missing Authorization: Basic credentials")
    try:
        given = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature_malformed", "Authorization: Basic is not base64") from None
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise SignatureError("signature_mismatch", "wrong basic-auth user or password")


#: The header a HubSpot workflow's "API key" authentication is set to send (docs/crm.md).
WORKFLOW_KEY_HEADER = "X-Nurture-Key"


def verify_static_key(given: str | None, expected: str) -> None:
    """Check a static key (HubSpot workflow "Send a webhook", authentication "API key").

    Raises:
        SignatureError: When absent or wrong.
    """
    if not given:
        raise SignatureError("signature_missing", f"missing {WORKFLOW_KEY_HEADER}")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise SignatureError("signature_mismatch", f"wrong {WORKFLOW_KEY_HEADER}")


# -- SendGrid -------------------------------------------------------------------------


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """Parse SendGrid's verification key: base64 DER as SendGrid shows it, or PEM.

    Raises:
        ValueError: When the text is not an ECDSA public key.
    """
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise ValueError(
            "is not the base64 public key from SendGrid's Event Webhook settings "
            f"(Signature Verification): {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("is not an ECDSA (elliptic curve) public key")
    return key


def verify_sendgrid(
    key: ec.EllipticCurvePublicKey,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
) -> None:
    """Check SendGrid's signature: ECDSA-SHA256 over ``timestamp + raw body``.

    Raises:
        SignatureError: When headers are missing or the signature does not verify.
    """
    if not signature or not timestamp:
        raise SignatureError(
            "signature_missing",
            f"missing {SENDGRID_SIGNATURE_HEADER} / {SENDGRID_TIMESTAMP_HEADER}; enable "
            "Signed Event Webhook Requests in SendGrid",
        )
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError(
            "signature_mismatch",
            f"{SENDGRID_SIGNATURE_HEADER} does not verify with NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY",
        ) from None
