"""The dramatiq actors: ``process_events`` (queue ``events``) and ``send_touches``
(queue ``touches``). They are declared per runtime on its broker, not at import, and
receive the processor and the sender they run (this module knows no ``Runtime``).
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


def event_handler(store: Store, processor: EventProcessor) -> Callable[[list[str]], None]:
    """The body of ``process_events``: apply each event of a batch on its own."""

    def process_events(events: list[str]) -> None:
        for index, raw in enumerate(events):
            try:
                event = validate_event(json.loads(raw), index)
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
    broker: dramatiq.Broker, store: Store, processor: EventProcessor, sender: TouchSender
) -> Actors:
    """Declare the actors on ``broker`` (with the dead-letter middleware)."""
    add_dead_letters(broker, store)
    return Actors(
        process_events=dramatiq.Actor(
            event_handler(store, processor),
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
