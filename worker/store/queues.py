"""Queue depths, read from dramatiq's own keys (for ``nurture status`` and metrics)."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from worker.store.keys import dramatiq_queue_keys


def queue_depths(
    client: redis.Redis, namespace: str, queues: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Ready, delayed and failed message counts per dramatiq queue."""
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
        ready, delayed, failed = values[i * 3 : i * 3 + 3]
        out[queue] = {"ready": int(ready), "delayed": int(delayed), "failed": int(failed)}
    return out
