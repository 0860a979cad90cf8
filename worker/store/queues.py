"""Queue depths of dramatiq's Redis broker, read from its own keys (for ``nurture status``
and metrics, through :func:`worker.broker.queue_depths`, which reads RabbitMQ's itself)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

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


def queued_messages(
    client: redis.Redis, namespace: str, queue: str
) -> list[tuple[str, str, bytes]]:
    """Every message dramatiq's Redis broker still holds for ``queue`` and its delay
    queue, ready or taken by a worker and not yet acknowledged: ``(queue name, message
    id, encoded message)``. dramatiq keeps each such message in ``<queue>.msgs`` until
    its ack; dead letters (``.XQ``) are not included."""
    out: list[tuple[str, str, bytes]] = []
    for name in (queue, f"{queue}.DQ"):
        raw = cast(dict[bytes, bytes], client.hgetall(f"{namespace}:{name}.msgs"))
        out += [(name, message_id.decode(), body) for message_id, body in raw.items()]
    return out


def drop_queued_message(client: redis.Redis, namespace: str, name: str, message_id: str) -> None:
    """Remove one message from dramatiq's Redis queue ``name`` (its body, its place in the
    list and any worker's unacknowledged set), once it is safely elsewhere."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(f"{namespace}:{name}.msgs", message_id)
    pipe.lrem(f"{namespace}:{name}", 0, message_id)
    for acks in client.scan_iter(match=f"{namespace}:__acks__.*.{name}", count=1000):
        pipe.srem(acks, message_id)
    pipe.execute()
