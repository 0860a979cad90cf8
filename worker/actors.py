"""The dramatiq actors: ``process_events`` (queue ``events``) and ``send_touches``
(queue ``touches``). They are declared per runtime on its broker, not at import.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.middleware import Middleware

from worker.errors import EventError
from worker.events import validate_event

if TYPE_CHECKING:
    from worker.runtime import Runtime

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
    """Keeps a message that failed for good (retries exhausted) as a dead letter."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

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
                self.rt.store.dead_letter(
                    message.actor_name,
                    f"gave up after retries: {exception!r}",
                    {"args": message.args},
                )
            except redis.RedisError:
                log.exception("could not record dead letter for message %s", message.message_id)


def await_redis(runtime: Runtime, limit: float = 300.0) -> None:
    """Wait (bounded) until Redis answers again.

    Raised from an actor while Redis is down, an error would make dramatiq's retry
    middleware fail to re-queue the message, and the message would then be acked and
    lost; waiting for Redis first makes the retry land.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not runtime.store.ping():
        time.sleep(0.5)


def declare_actors(runtime: Runtime) -> Actors:
    """Declare this runtime's actors on its broker."""
    from worker.pipeline import EventProcessor, PoisonEvent
    from worker.sending import Touch, TouchSender

    runtime.broker.add_middleware(DeadLetters(runtime))
    processor = EventProcessor(runtime)
    sender = TouchSender(runtime)

    def process_events(events: list[str]) -> None:
        for index, raw in enumerate(events):
            try:
                event = validate_event(json.loads(raw), index)
                outcome = processor.process(event)
                log.debug("event %s: %s", event.id, outcome)
            except redis.RedisError:
                # Processing is idempotent: the whole message is retried once Redis is back.
                await_redis(runtime)
                raise
            except (EventError, PoisonEvent, ValueError) as exc:
                log.error("event refused: %s", exc)
                runtime.store.dead_letter("event", str(exc), {"event": raw})
            except Exception as exc:
                # One event that breaks processing must not hold up the rest of its batch.
                log.exception("event %d of its batch failed", index)
                runtime.store.dead_letter("event", f"processing failed: {exc!r}", {"event": raw})

    def send_touches(touches: list[list[Any]]) -> None:
        try:
            outcomes = sender.send_batch([Touch(str(m), float(d)) for m, d in touches])
        except redis.RedisError:
            await_redis(runtime)
            raise
        log.debug("touches: %s", outcomes)

    return Actors(
        process_events=dramatiq.Actor(
            process_events,
            broker=runtime.broker,
            actor_name="process_events",
            queue_name=EVENTS_QUEUE,
            priority=0,
            options=dict(RETRIES),
        ),
        send_touches=dramatiq.Actor(
            send_touches,
            broker=runtime.broker,
            actor_name="send_touches",
            queue_name=TOUCHES_QUEUE,
            priority=0,
            options=dict(RETRIES),
        ),
    )
