"""Queue depths of dramatiq's Redis broker, read from its own keys (for ``nurture status``
and metrics, through :func:`worker.broker.queue_depths`, which reads RabbitMQ's itself)."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from worker.store.keys import dramatiq_queue_keys


def queue_depths(
    client: redis.Redis, namespace: str, queues: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Ready, delayed and dead (retries exhausted) message counts per dramatiq queue."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        ready, delayed, failed = dramatiq_queue_keys(namespace, queue)
        pipe.llen(ready)
        pipe.llen(delayed)
        pipe.zcard(failed)
    values = pipe.execute()
    out = {}
    for i, queue in enumerate(names):
        ready, delayed, dead = values[i * 3 : i * 3 + 3]
        out[queue] = {"ready": int(ready), "delayed": int(delayed), "dead": int(dead)}
    return out
