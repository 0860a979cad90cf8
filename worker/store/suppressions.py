"""Suppressed addresses (bounces, spam reports, unsubscribes)."""

from __future__ import annotations

import redis

from worker.store.keys import Keys


class SuppressionStore:
    """Addresses nothing may be sent to, with the reason."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def suppress(self, email: str, reason: str) -> bool:
        """Suppress an address; True if newly suppressed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.suppressed_email(email), reason, nx=True)
        pipe.sadd(self.keys.suppressed_set, email.lower())
        return bool(pipe.execute()[0])

    def reason(self, email: str) -> str | None:
        """Why the address is suppressed, or None."""
        value = self.redis.get(self.keys.suppressed_email(email))
        return value.decode() if isinstance(value, bytes) else None

    def count(self) -> int:
        return int(self.redis.scard(self.keys.suppressed_set))
