"""Unsubscribe tokens: they name the lead, cannot be forged or altered, and do not
reveal the lead id to whoever sees the link (a forwarded email, a proxy log).

A token is the lead id encrypted with AES-SIV (RFC 5297): deterministic, so one lead
always gets the same link, and authenticated, so a changed token reads as nothing.
The key is derived from the unsubscribe secret. Tokens of the older signed form
(``<lead id in base64>.<mac>``) still work, so links in emails already sent keep
unsubscribing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

#: Longest token read; a lead id is at most 200 characters.
MAX_TOKEN = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed_token(secret: str, lead_id: str) -> str:
    """A token of the older signed form, as emails sent before encryption carry."""
    return f"{_b64(lead_id.encode())}.{_b64(_mac(secret, lead_id))}"


def _mac(secret: str, lead_id: str) -> bytes:
    # Truncated to 128 bits: plenty against forgery, short enough for a URL.
    return hmac.new(secret.encode(), b"unsubscribe:" + lead_id.encode(), hashlib.sha256).digest()[
        :16
    ]


def _siv(secret: str) -> AESSIV:
    # A 512-bit key (AES-256-SIV) of its own, so the signing MAC and the cipher never
    # share a key.
    return AESSIV(hashlib.sha512(b"nurture-unsubscribe-siv:" + secret.encode()).digest())


def make_token(secret: str, lead_id: str) -> str:
    """A URL-safe token naming ``lead_id`` without revealing it, keyed by ``secret``."""
    return _b64(_siv(secret).encrypt(lead_id.encode("utf-8"), [b"unsubscribe"]))


def read_token(secret: str, token: str) -> str | None:
    """The lead id a token names, or None when it is malformed, forged or altered."""
    if len(token) > MAX_TOKEN:
        return None
    if "." not in token:
        try:
            plain = _siv(secret).decrypt(_unb64(token), [b"unsubscribe"])
            return plain.decode("utf-8")
        except (InvalidTag, binascii.Error, UnicodeDecodeError, ValueError):
            return None
    return _read_signed(secret, token)


def _read_signed(secret: str, token: str) -> str | None:
    """A token of the older signed form (the lead id in base64, then its MAC)."""
    head, sep, sig = token.partition(".")
    if not sep:
        return None
    try:
        lead_id = _unb64(head).decode("utf-8")
        mac = _unb64(sig)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, lead_id)):
        return None
    return lead_id
