"""Accept events (from ``nurture emit`` or ``POST /events``): drop replays, stamp the
receive time, and queue them durably before saying yes."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import dramatiq.errors
import redis

from worker.errors import BrokerUnavailableError, StoreUnavailableError
from worker.events import Event
from worker.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


def ingest(runtime: Runtime, events: list[Event]) -> IngestResult:
    """Queue new events; replays (same id within the dedup window) are counted, not queued.

    Raises:
        StoreUnavailableError: When Redis is unreachable; nothing is half-accepted:
            ids marked seen are forgotten again so the sender's retry goes through.
    """
    now = runtime.clock.now()
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)  # a repeat inside one batch is a duplicate too
    try:
        fresh_flags = runtime.store.events.mark_seen(list(unique))
    except redis.RedisError as exc:
        raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc
    fresh = [
        event if event.occurred_at else event.model_copy(update={"occurred_at": now})
        for event, is_new in zip(unique.values(), fresh_flags, strict=True)
        if is_new
    ]
    # validate_event already proved each event serialises; doing it before queueing
    # anything keeps a batch all-or-nothing.
    encoded = [event.to_json() for event in fresh]
    size = runtime.tuning.events_per_message
    queued = 0
    try:
        for start in range(0, len(encoded), size):
            chunk = encoded[start : start + size]
            runtime.actors.process_events.send(chunk)
            queued += len(chunk)
    except (redis.RedisError, dramatiq.errors.ConnectionError) as exc:
        # If even this fails, the ids stay marked for EVENT_PENDING_SECONDS only.
        with contextlib.suppress(redis.RedisError):
            runtime.store.events.forget(event.id for event in fresh[queued:])
        raise BrokerUnavailableError(
            f"the message broker ({runtime.broker_name}) is unavailable while queueing: {exc}"
        ) from exc
    try:
        runtime.store.events.confirm(event.id for event in fresh)
    except redis.RedisError as exc:
        # The events are queued: that is what counts. Their ids are kept for
        # EVENT_PENDING_SECONDS only, so a replay after that would be queued again (and
        # applied idempotently); better than refusing what is already accepted.
        log.warning("events queued, but their replay guard was not extended: %s", exc)
    return IngestResult(accepted=len(fresh), duplicates=len(events) - len(fresh))
