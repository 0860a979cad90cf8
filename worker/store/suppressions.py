"""Suppressed addresses (bounces, spam reports, unsubscribes, erased people).

The list holds a keyed hash (HMAC-SHA256) of each normalised address, never the address:
an erased person's address must not stay in Redis (GDPR Art. 17), yet it must never be
mailed again, so only what recognises the address is kept. The secret is generated once
and kept in Redis (``<prefix>:supph-secret``).

Entries live in bucketed hashes (``Keys.suppressions``: a few per key at scale, spread
over every cluster slot); the count is kept beside them. Entries of the older layouts
(``<prefix>:supp:<address>``, ``<prefix>:supph:<hash>``) are moved here by ``nurture
migrate state``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
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

    def suppress(self, email: str, reason: str) -> bool:
        """Suppress an address (by its keyed hash); True if newly suppressed."""
        return self.suppress_digest(self.digest(email), reason)

    def suppress_digest(self, digest: str, reason: str) -> bool:
        """Suppress the address with this keyed hash; True if newly suppressed."""
        added = bool(self.redis.hsetnx(self.keys.suppressions(digest), digest, reason))
        if added:
            self.redis.incr(self.keys.suppressed_count)
        return added

    def lift(self, email: str, only_reasons: frozenset[str]) -> str | None:
        """Lift a suppression whose reason is one of ``only_reasons``; the reason lifted."""
        reason = self.reason(email)
        if reason is None or reason not in only_reasons:
            return None
        digest = self.digest(email)
        if self.redis.hdel(self.keys.suppressions(digest), digest):
            self.redis.decr(self.keys.suppressed_count)
        return reason

    def reason(self, email: str) -> str | None:
        """Why the address is suppressed, or None."""
        digest = self.digest(email)
        value = self.redis.hget(self.keys.suppressions(digest), digest)
        return value.decode() if isinstance(value, bytes) else None

    def reasons(self, emails: Sequence[str]) -> list[str | None]:
        """:meth:`reason` for several addresses in one pipelined round trip ('' = no
        address: None)."""
        digests = [self.digest(email) if email else "" for email in emails]
        pipe = self.redis.pipeline(transaction=False)
        for digest in digests:
            if digest:
                pipe.hget(self.keys.suppressions(digest), digest)
        found = iter(cast(list[bytes | None], pipe.execute()) if any(digests) else [])
        return [
            (value.decode() if isinstance(value := next(found), bytes) else None)
            if digest
            else None
            for digest in digests
        ]

    def count(self) -> int:
        return int(cast(bytes | None, self.redis.get(self.keys.suppressed_count)) or 0)
