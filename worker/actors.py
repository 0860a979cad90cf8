"""The dramatiq actors: ``process_events`` (queue ``events``) and ``send_touches``
(queue ``touches``). They are declared per runtime on its broker, not at import.
"""

from __future__ import annotations

import logging
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
                import json

                event = validate_event(json.loads(raw), index)
                outcome = processor.process(event)
                log.debug("event %s: %s", event.id, outcome)
            except (EventError, PoisonEvent, ValueError) as exc:
                log.error("event refused: %s", exc)
                runtime.store.dead_letter("event", str(exc), {"event": raw})

    def send_touches(touches: list[list[Any]]) -> None:
        outcomes = sender.send_batch([Touch(str(m), float(d)) for m, d in touches])
        log.debug("touches: %s", outcomes)

    return Actors(
        process_events=dramatiq.Actor(
            process_events,
            broker=runtime.broker,
            actor_name="process_events",
            queue_name=EVENTS_QUEUE,
            priority=0,
            options={"max_retries": 20, "min_backoff": 500, "max_backoff": 60_000},
        ),
        send_touches=dramatiq.Actor(
            send_touches,
            broker=runtime.broker,
            actor_name="send_touches",
            queue_name=TOUCHES_QUEUE,
            priority=0,
            options={"max_retries": 20, "min_backoff": 500, "max_backoff": 60_000},
        ),
    )
