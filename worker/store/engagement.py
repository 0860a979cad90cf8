"""What each lead did with its emails (opens, clicks of steps, content and tags).

The SendGrid Event Webhook records facts here; the sender reads them with the touch
(:meth:`~worker.store.enrollments.EnrollmentStore.touch_state`) to evaluate engagement
conditions and to prefer content with the tags the lead clicked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import redis

from worker.store.keys import Keys


class EngagementStore:
    """Per-lead engagement facts (one hash per lead, first time of each fact)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def record(self, lead_id: str, fields: Iterable[str], when: float) -> None:
        """Record facts (store fields from :func:`~worker.sequences.engagement.fields_for`);
        the first time of each is kept, so a replayed webhook event changes nothing."""
        pipe = self.redis.pipeline(transaction=False)
        for name in fields:
            pipe.hsetnx(self.keys.engagement(lead_id), name, when)
        pipe.execute()

    def get(self, lead_id: str) -> dict[str, float]:
        """Every recorded field of a lead -> first time."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.engagement(lead_id)))
        return {k.decode(): float(v) for k, v in raw.items()}
