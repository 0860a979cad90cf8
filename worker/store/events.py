"""The replay guard: which event ids were accepted and which were applied."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from worker.store.keys import Keys
from worker.store.timeline import add_to

EVENT_DEDUP_SECONDS = 8 * 24 * 3600  # the contract asks for at least 7 days
#: How long an event id stays marked while its event is being queued. Should Redis fail
#: between marking and queueing (so the mark cannot be undone), the sender's retry is
#: accepted once this has passed instead of being taken for a replay for 8 days.
EVENT_PENDING_SECONDS = 120
WEBHOOK_DEDUP_SECONDS = 8 * 24 * 3600
#: The value of an event id's key once the event was applied.
APPLIED = b"done"


class ReplayGuard:
    """Event ids (CRM events, provider webhook events) seen within the dedup window."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def mark_seen(self, event_ids: list[str]) -> list[bool]:
        """Mark event ids as being queued; True for each id not seen before.

        The mark is short-lived (:data:`EVENT_PENDING_SECONDS`) until :meth:`confirm`
        extends it to the dedup window, once the events are queued.
        """
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self.keys.event(event_id), "1", nx=True, ex=EVENT_PENDING_SECONDS)
        return [bool(result) for result in pipe.execute()]

    def confirm(self, event_ids: Iterable[str]) -> None:
        """The events are queued: keep their ids for the whole dedup window."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.expire(self.keys.event(event_id), EVENT_DEDUP_SECONDS)
        pipe.execute()

    def forget(self, event_ids: Iterable[str]) -> None:
        """Undo :meth:`mark_seen` for events that could not be queued, so a retry works."""
        ids = [self.keys.event(event_id) for event_id in event_ids]
        if ids:
            self.redis.delete(*ids)

    def applied(self, event_id: str, lead_id: str = "", notes: Sequence[str] = ()) -> None:
        """Record that an event was applied (a redelivered message then changes nothing),
        and, in the same round trip, the lead's timeline entries for it."""
        key = self.keys.event(event_id)
        # XX KEEPTTL: the dedup window stays what ingest set; a key gone already (past
        # the window) gets a fresh one rather than living forever.
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, APPLIED, xx=True, keepttl=True)
        add_to(pipe, self.keys, lead_id, notes)
        if not pipe.execute()[0]:
            self.redis.set(key, APPLIED, ex=EVENT_DEDUP_SECONDS)

    def webhook_event_new(self, provider_event_id: str) -> bool:
        """True the first time a provider event id is seen."""
        return bool(
            self.redis.set(
                self.keys.webhook_event(provider_event_id), "1", nx=True, ex=WEBHOOK_DEDUP_SECONDS
            )
        )
