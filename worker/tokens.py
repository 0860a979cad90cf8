"""Signed unsubscribe tokens: they name the lead and cannot be forged or altered."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, lead_id: str) -> bytes:
    # Truncated to 128 bits: plenty against forgery, short enough for a URL.
    return hmac.new(secret.encode(), b"unsubscribe:" + lead_id.encode(), hashlib.sha256).digest()[
        :16
    ]


def make_token(secret: str, lead_id: str) -> str:
    """A URL-safe token naming ``lead_id``, signed with ``secret``."""
    return f"{_b64(lead_id.encode())}.{_b64(_mac(secret, lead_id))}"


def read_token(secret: str, token: str) -> str | None:
    """The lead id a token names, or None when it is malformed, forged or altered."""
    head, sep, sig = token.partition(".")
    if not sep or len(token) > 1024:
        return None
    try:
        lead_id = _unb64(head).decode("utf-8")
        mac = _unb64(sig)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, lead_id)):
        return None
    return lead_id
