"""Suppressed addresses (bounces, spam reports, unsubscribes, erased people).

The list holds a keyed hash (HMAC-SHA256) of each normalised address, never the address:
an erased person's address must not stay in Redis (GDPR Art. 17), yet it must never be
mailed again, so only what recognises the address is kept. The secret is generated once
and kept in Redis (``<prefix>:supph-secret``). Entries written before hashing (the plain
``<prefix>:supp:<address>`` keys) are still read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import cast

import redis

from worker.store.keys import Keys


def normalise(email: str) -> str:
    """The form an address is hashed in: trimmed, lower-case."""
    return email.strip().lower()


class SuppressionStore:
    """Addresses nothing may be sent to, with the reason."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._secret: bytes | None = None

    def secret(self) -> bytes:
        """The HMAC secret, generated once and shared through Redis."""
        if self._secret is None:
            self.redis.set(self.keys.suppression_secret, secrets.token_hex(32), nx=True)
            self._secret = cast(bytes, self.redis.get(self.keys.suppression_secret))
        return self._secret

    def digest(self, email: str) -> str:
        """The keyed hash of the normalised address."""
        return hmac.new(self.secret(), normalise(email).encode(), hashlib.sha256).hexdigest()

    def key_for(self, email: str) -> str:
        """The key holding why ``email`` is suppressed (what the send reservation reads)."""
        return self.keys.suppressed_hash(self.digest(email))

    def suppress(self, email: str, reason: str) -> bool:
        """Suppress an address (by its keyed hash); True if newly suppressed."""
        digest = self.digest(email)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.suppressed_hash(digest), reason, nx=True)
        pipe.sadd(self.keys.suppressed_set, digest)
        return bool(pipe.execute()[0])

    def lift(self, email: str, only_reasons: frozenset[str]) -> str | None:
        """Lift a suppression whose reason is one of ``only_reasons``; the reason lifted."""
        reason = self.reason(email)
        if reason is None or reason not in only_reasons:
            return None
        digest = self.digest(email)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.suppressed_hash(digest), self.keys.suppressed_email(email))
        pipe.srem(self.keys.suppressed_set, digest, normalise(email))
        pipe.execute()
        return reason

    def reason(self, email: str) -> str | None:
        """Why the address is suppressed, or None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key_for(email))
        pipe.get(self.keys.suppressed_email(email))
        hashed, plain = pipe.execute()
        value = hashed if hashed is not None else plain
        return value.decode() if isinstance(value, bytes) else None

    def forget_plain(self, email: str) -> None:
        """Replace an older plain-address entry by its hashed form (erasure)."""
        reason = self.redis.get(self.keys.suppressed_email(email))
        if isinstance(reason, bytes):
            self.suppress(email, reason.decode())
            self.redis.delete(self.keys.suppressed_email(email))
            self.redis.srem(self.keys.suppressed_set, normalise(email))

    def count(self) -> int:
        return int(self.redis.scard(self.keys.suppressed_set))
