"""``nurture migrate state``: move an install's state to the current key layout (the
bucketed keys, one hash per lead: :mod:`worker.store.layout_migration`; run with every
worker stopped).

``nurture migrate queues``: move the messages still queued in dramatiq's Redis broker
to the broker ``NURTURE_BROKER_URL`` names (RabbitMQ), when an install moves its queues.

Run it with every worker stopped and the HTTP services already pointed at the new
broker (docs/deployment.md, "Moving an existing single-Redis install over"). Each message
is published to the new broker first (publisher confirms: RabbitMQ has it) and only then
removed from Redis, so a crash mid-way leaves a message in both places at worst, which is
harmless: events are deduplicated by id when applied, touches by the send ledger.
Delayed messages keep their due time. Dead letters stay where they are (they are kept in
the dead-letter stream ``nurture status`` shows as well).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name

from worker.actors import EVENTS_QUEUE, TOUCHES_QUEUE
from worker.broker import broker_kind
from worker.errors import SettingsError
from worker.runtime import Runtime
from worker.store.layout_migration import (
    check_shards,
    fold_leads,
    layout1_leads,
    layout2_leads,
    migrate_layout1,
)
from worker.store.queues import drop_queued_message, queued_messages


@dataclass(frozen=True)
class MovedQueue:
    """What ``migrate_queues`` moved from one queue."""

    queue: str
    ready: int
    delayed: int


def migrate_queues(runtime: Runtime, redis_namespace: str = "dramatiq") -> list[MovedQueue]:
    """Move every queued message from the state Redis's dramatiq queues to the runtime's
    broker.

    Raises:
        SettingsError: When ``NURTURE_BROKER_URL`` does not name a broker other than
            the state Redis.
    """
    if broker_kind(runtime.settings.broker_url) != "rabbitmq" or isinstance(
        runtime.broker, RedisBroker
    ):
        raise SettingsError(
            "NURTURE_BROKER_URL: set it to the RabbitMQ the queues move to "
            "(amqp://user:password@host:5672/vhost); nurture migrate queues moves the "
            "messages queued in NURTURE_REDIS_URL there"
        )
    client = runtime.store.redis
    return [
        _move_queue(client, runtime.broker, redis_namespace, queue)
        for queue in (EVENTS_QUEUE, TOUCHES_QUEUE)
    ]


def _move_queue(
    client: redis.Redis, target: dramatiq.Broker, namespace: str, queue: str
) -> MovedQueue:
    ready = delayed = 0
    for name, message_id, body in queued_messages(client, namespace, queue):
        message = dramatiq.Message.decode(body)
        message = message.copy(queue_name=q_name(message.queue_name))
        eta = message.options.pop("eta", None)
        if eta is not None:
            delay = max(0, int(eta) - int(time.time() * 1000))
            target.enqueue(message, delay=delay)
            delayed += 1
        else:
            target.enqueue(message)
            ready += 1
        drop_queued_message(client, namespace, name, message_id)
    return MovedQueue(queue, ready, delayed)


def migrate_state(runtime: Runtime, *, dry_run: bool = False) -> Counter[str]:
    """Move an install's state to the current key layout (see
    :mod:`worker.store.layout_migration`): on a single Redis from the untagged layout to
    the bucketed one first, then (single Redis or Redis Cluster) each lead's four keys
    into its one hash; with ``dry_run`` only count (``folded`` counts the leads of
    layout 1 as well: the fold takes them once the first step has run).

    Layout 1 never lived on a Redis Cluster: there only the second step runs.

    Raises:
        SettingsError: Before anything is written, when ``NURTURE_STATE_SHARDS`` is not
            the number of shards the state was laid out with (naming both).
    """
    store = runtime.store
    check_shards(store.redis, store.keys)
    counts: Counter[str] = Counter()
    if dry_run:
        leads = layout2_leads(store.redis, store.keys)
        if not runtime.settings.redis_cluster:
            counts += migrate_layout1(store.redis, store.keys, dry_run=True)
            leads |= layout1_leads(store.redis, store.keys)
        counts["folded"] = len(leads)
        return +counts
    if not runtime.settings.redis_cluster:
        counts += migrate_layout1(store.redis, store.keys)
    counts += fold_leads(store.redis, store.keys, store.scripts["fold_lead"])
    return counts
