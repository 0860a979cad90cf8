"""What ``nurture status`` (and ``/metrics``) report: queues, schedule, failures."""

from __future__ import annotations

from typing import Any

from worker.actors import EVENTS_QUEUE, TOUCHES_QUEUE
from worker.crm.hubspot_sync import FETCH_QUEUE
from worker.errors import CatalogError
from worker.runtime import Runtime

#: Sends of unknown outcome that ``nurture status`` lists one by one (the count is whole).
UNKNOWN_LISTED = 20


def queue_depths(runtime: Runtime) -> dict[str, dict[str, int]]:
    """Ready, delayed and failed (dead-lettered) message counts per queue, read from
    whichever broker carries the queues (the state Redis, or ``NURTURE_BROKER_URL``).

    Raises:
        BrokerUnavailableError: Naming the broker's setting when it does not answer.
    """
    depths = runtime.broker_depths()
    empty = {"ready": 0, "delayed": 0, "dead": 0}
    return {
        queue: {
            "ready": depths.get(queue, empty)["ready"],
            "delayed": depths.get(queue, empty)["delayed"],
            # "failed": the name status and the metric's label have always used.
            "failed": depths.get(queue, empty)["dead"],
        }
        for queue in (EVENTS_QUEUE, TOUCHES_QUEUE, FETCH_QUEUE)
    }


def delivery_state(runtime: Runtime) -> dict[str, Any]:
    """Whether delivery runs, or why and since when it is paused (an account fault)."""
    pause = runtime.store.pauses.delivery()
    if pause is None:
        return {"paused": False}
    return {"paused": True, "reason": pause.reason, "since": pause.since}


def paused_sequences(runtime: Runtime) -> dict[str, Any]:
    """Paused sequences (by ``nurture pause`` or ``paused: true``) and the touches waiting."""
    paused: dict[str, dict[str, Any]] = {
        seq: {"by": "nurture pause", "since": since}
        for seq, since in runtime.store.pauses.paused_sequences().items()
    }
    try:
        sequences = list(runtime.catalog.current.catalog.sequences.values())
    except CatalogError:
        sequences = []  # `nurture validate` names the problem; status still answers
    for sequence in sequences:
        if sequence.paused:
            paused.setdefault(sequence.id, {"by": f"paused: true in {sequence.file}"})
    return {"sequences": paused, "touches_waiting": runtime.store.schedule.parked_count()}


def collect_status(runtime: Runtime) -> dict[str, Any]:
    """Everything an operator wants to see at a glance."""
    runtime.check_redis()
    store = runtime.store
    stats = store.stats()
    return {
        "redis_url": runtime.redis_url,
        "delivery": delivery_state(runtime),
        "paused": paused_sequences(runtime),
        "broker": runtime.broker_name,
        "queues": queue_depths(runtime),
        "schedule": store.schedule_stats(),
        "dead_letters": {"count": store.dead_letter_count(), "latest": store.dead_letters(5)},
        "unknown": store.unknown_outcomes(UNKNOWN_LISTED),
        "unknown_count": store.unknown_count(),
        "suppressed": store.suppressed_count(),
        "stats": stats,
        "counters": store.global_counters(stats),
    }
