"""The dramatiq actors: ``process_events`` (queue ``events``), ``send_touches``
(queue ``touches``) and ``fetch_contacts`` (queue ``crm``: HubSpot contacts read back
through the CRM API, :mod:`worker.crm.hubspot_sync`). They are declared per runtime on
its broker, not at import, and receive the processor, the sender and the fetch handler
they run (this module knows no ``Runtime``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware, Retries

from worker.crm.hubspot_sync import (
    FETCH_OPTIONS,
    FETCH_QUEUE,
    FetchRequest,
    fetch_request,
    is_fetch,
    keep_retrying,
)
from worker.errors import EventError, PoisonEvent
from worker.events import validate_event
from worker.pipeline import EventProcessor
from worker.sending import Touch, TouchSender
from worker.store import Store

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
TOUCHES_QUEUE = "touches"
#: Redelivery of a failed message: up to 20 times, backing off from 0.5 s to 60 s.
RETRIES = {"max_retries": 20, "min_backoff": 500, "max_backoff": 60_000}


@dataclass(frozen=True)
class Actors:
    process_events: dramatiq.Actor[[list[str]], None]
    send_touches: dramatiq.Actor[[list[list[Any]]], None]
    fetch_contacts: dramatiq.Actor[[list[FetchRequest]], None]


class DeadLetters(Middleware):
    """Keeps a message that failed for good (retries exhausted) as a dead letter.

    It must sit *before* dramatiq's ``Retries`` in the broker's middleware list:
    after-hooks run in reverse order, so only then does it run after ``Retries`` has
    marked the message failed (see :func:`add_dead_letters`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is not None and message.failed:
            try:
                self.store.dead.add(
                    message.actor_name,
                    f"gave up after retries: {exception!r}",
                    {"args": message.args},
                )
            except redis.RedisError:
                log.exception("could not record dead letter for message %s", message.message_id)


def add_dead_letters(broker: dramatiq.Broker, store: Store) -> None:
    """Add :class:`DeadLetters` where it sees ``Retries``' verdict (see its docstring)."""
    broker.add_middleware(DeadLetters(store), before=Retries)


def await_redis(store: Store, limit: float = 300.0) -> None:
    """Wait (bounded) until Redis answers again.

    Raised from an actor while Redis is down, an error would make dramatiq's retry
    middleware fail to re-queue the message, and the message would then be acked and
    lost; waiting for Redis first makes the retry land.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not store.ping():
        time.sleep(0.5)


def event_handler(
    store: Store,
    processor: EventProcessor,
    fetch: Callable[[list[FetchRequest]], Any] | None = None,
) -> Callable[[list[str]], None]:
    """The body of ``process_events``: apply each event of a batch on its own.

    ``crm.changed`` events (a CRM record to read back) go, all those of a batch in one
    message, to ``fetch``, the ``fetch_contacts`` actor's ``send``.
    """

    def process_events(events: list[str]) -> None:
        requests: list[FetchRequest] = []
        for index, raw in enumerate(events):
            try:
                event = validate_event(json.loads(raw), index)
                if fetch is not None and is_fetch(event):
                    requests.append(fetch_request(event))
                    continue
                outcome = processor.process(event)
                log.debug("event %s: %s", event.id, outcome)
            except redis.RedisError:
                # Processing is idempotent: the whole message is retried once Redis is back.
                await_redis(store)
                raise
            except (EventError, PoisonEvent, ValueError) as exc:
                log.error("event refused: %s", exc)
                store.dead.add("event", str(exc), {"event": raw})
            except Exception as exc:
                # One event that breaks processing must not hold up the rest of its batch.
                log.exception("event %d of its batch failed", index)
                store.dead.add("event", f"processing failed: {exc!r}", {"event": raw})
        if requests and fetch is not None:
            fetch(requests)  # raises (and the batch is retried) if it cannot be queued

    return process_events


def touch_handler(store: Store, sender: TouchSender) -> Callable[[list[list[Any]]], None]:
    """The body of ``send_touches``: process a batch of claimed touches."""

    def send_touches(touches: list[list[Any]]) -> None:
        try:
            outcomes = sender.send_batch([Touch(str(m), float(d)) for m, d in touches])
        except redis.RedisError:
            await_redis(store)
            raise
        log.debug("touches: %s", outcomes)

    return send_touches


def declare_actors(
    broker: dramatiq.Broker,
    store: Store,
    processor: EventProcessor,
    sender: TouchSender,
    fetch: Callable[[list[FetchRequest]], None] | None = None,
) -> Actors:
    """Declare the actors on ``broker`` (with the dead-letter middleware).

    Args:
        fetch: The body of ``fetch_contacts`` (:func:`worker.crm.hubspot_sync.fetch_handler`);
            without it ``crm.changed`` events are processed like any other (no reads).
    """
    add_dead_letters(broker, store)
    fetch_contacts: dramatiq.Actor[[list[FetchRequest]], None] = dramatiq.Actor(
        fetch or _no_fetch,
        broker=broker,
        actor_name="fetch_contacts",
        queue_name=FETCH_QUEUE,
        priority=0,
        options={**FETCH_OPTIONS, "retry_when": keep_retrying},
    )
    return Actors(
        fetch_contacts=fetch_contacts,
        process_events=dramatiq.Actor(
            event_handler(store, processor, fetch_contacts.send if fetch else None),
            broker=broker,
            actor_name="process_events",
            queue_name=EVENTS_QUEUE,
            priority=0,
            options=dict(RETRIES),
        ),
        send_touches=dramatiq.Actor(
            touch_handler(store, sender),
            broker=broker,
            actor_name="send_touches",
            queue_name=TOUCHES_QUEUE,
            priority=0,
            options=dict(RETRIES),
        ),
    )


def _no_fetch(requests: list[FetchRequest]) -> None:
    raise RuntimeError("fetch_contacts was declared without a handler")
