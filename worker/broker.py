"""The message broker: dramatiq's Redis broker by default, dramatiq's RabbitMQ broker
when ``NURTURE_BROKER_URL`` is an ``amqp://`` URL.

The broker only carries messages (events to process, touches to send); the state
(leads, enrollments, the schedule, the ledger) stays in Redis whichever broker runs.
Delays, retries and dead letters are dramatiq's own on both brokers:

* Redis: lists and hashes under the ``namespace`` prefix; a worker that stops
  heartbeating for ``heartbeat_timeout`` ms has its unacked messages requeued by the
  next *maintenance* run on their queue, which a fetch or enqueue starts with a chance
  of ``maintenance_chance`` in a million (dramatiq's ``RedisBroker`` parameters;
  ``NURTURE_BROKER_HEARTBEAT_TIMEOUT``, ``NURTURE_BROKER_MAINTENANCE_CHANCE``).
* RabbitMQ: per queue ``<q>`` a ``<q>.DQ`` delay queue and a ``<q>.XQ`` dead-letter
  queue (messages dead-lettered there are kept 7 days); RabbitMQ requeues a consumer's
  unacked messages as soon as its connection drops. Publisher confirms are on, so an
  enqueue returns only once RabbitMQ has the message, and a queue deleted from under the
  worker is re-declared instead of the message being dropped as unroutable. Queues are
  quorum queues (replicated, Raft) by default, the RabbitMQ type meant for data safety;
  see https://www.rabbitmq.com/docs/quorum-queues. Isolate installs with a vhost of
  their own (the URL's path), not a name prefix.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika.exceptions
from dramatiq.brokers import rabbitmq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed

from worker.errors import SettingsError
from worker.store.queues import queue_depths as redis_queue_depths

AMQP_SCHEMES = ("amqp", "amqps")
#: Milliseconds without a command from a worker process after which dramatiq's Redis
#: broker requeues its unacknowledged messages (dramatiq's own default: 60,000). A live
#: process sends one at least every 200 ms (each idle consumer's fetch) or, with every
#: queue saturated, at each ack: its requests end within 10 s (the SendGrid and webhook
#: timeouts), so 15 s is not reached by a process that lives.
HEARTBEAT_TIMEOUT_MS = 15_000
#: Chance, in a million, that a fetch or enqueue also runs the queue's maintenance
#: (dramatiq's default: 1,000). An idle consumer fetches 5-10 times a second, so each
#: process runs one maintenance per queue every 2-4 s idle: a dead process's messages
#: return ~1.5-3 s after its heartbeat timeout; a maintenance without dead workers is
#: two ZRANGEBYSCOREs on small sorted sets.
MAINTENANCE_CHANCE = 50_000
#: The AMQP heartbeat timeout (seconds) the worker asks RabbitMQ for when
#: ``NURTURE_BROKER_URL`` names none (``?heartbeat=`` on the URL wins). RabbitMQ proposes
#: 60 s and drops a silent connection only 2-3 timeouts after its last frame, so a host
#: that dies without closing its connections would hold its unacknowledged messages for
#: 2-3 minutes; with 10 s they come back in ~30 s (tests/scale/test_hosts.py measured
#: 28-29 s). RabbitMQ's guide (https://www.rabbitmq.com/docs/heartbeats) finds values
#: of 5 to 20 seconds optimal for most environments.
AMQP_HEARTBEAT_SECONDS = 10
REDIS_SCHEMES = ("redis", "rediss", "unix")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs, status and errors)."""
    parts = []
    for one in url.split(";"):
        split = urlsplit(one)
        if split.password:
            netloc = split.netloc.replace(f":{split.password}@", ":***@", 1)
            one = urlunsplit(split._replace(netloc=netloc))
        parts.append(one)
    return ";".join(parts)


def broker_kind(broker_url: str | None) -> str:
    """``"redis"`` or ``"rabbitmq"``: which broker a ``NURTURE_BROKER_URL`` selects.

    Several RabbitMQ nodes may be given separated by ``;`` (dramatiq tries them in turn).

    Raises:
        SettingsError: When the URL's scheme is neither Redis nor AMQP.
    """
    if not broker_url:
        return "redis"
    schemes = {urlsplit(one.strip()).scheme for one in broker_url.split(";")}
    if schemes <= set(AMQP_SCHEMES):
        return "rabbitmq"
    if len(schemes) == 1 and schemes <= set(REDIS_SCHEMES):
        return "redis"
    raise SettingsError(
        f"NURTURE_BROKER_URL: {redact_url(broker_url)!r} is not a broker URL; write "
        "amqp://user:password@host:5672/vhost for RabbitMQ (several nodes separated by ';') "
        "or redis://host:6379/0 for a Redis of its own, or leave it unset to queue in "
        "NURTURE_REDIS_URL"
    )


def make_broker(
    redis_url: str,
    broker_url: str | None = None,
    namespace: str = "dramatiq",
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT_MS,
    *,
    maintenance_chance: int = MAINTENANCE_CHANCE,
    quorum_queues: bool = True,
    state_on_cluster: bool = False,
) -> dramatiq.Broker:
    """The dramatiq broker for these settings.

    Args:
        redis_url: The state Redis; the queues live there too when ``broker_url`` is unset.
        broker_url: ``NURTURE_BROKER_URL``: ``amqp://`` (RabbitMQ) or ``redis://`` (a
            plain Redis just for the queues); None to queue in ``redis_url``.
        namespace: Key prefix of dramatiq's Redis keys (unused by RabbitMQ: use a vhost).
        heartbeat_timeout: Redis only: milliseconds of silence after which a worker's
            unacked messages are requeued.
        maintenance_chance: Redis only: how many fetches and enqueues in a million also
            run the queue's maintenance (the requeue of dead workers' messages).
        quorum_queues: RabbitMQ only: declare quorum queues (else classic ones). An
            existing queue keeps its type; RabbitMQ refuses to redeclare it as the other.
        state_on_cluster: The state is on a Redis Cluster, where dramatiq's Redis broker
            cannot run (its scripts touch keys of many slots).

    Raises:
        SettingsError: On an unknown URL scheme, or a Redis Cluster without a separate
            broker.
    """
    kind = broker_kind(broker_url)
    if kind == "rabbitmq":
        assert broker_url is not None
        broker_class = QuorumRabbitmqBroker if quorum_queues else RabbitmqBroker
        broker: dramatiq.Broker = broker_class(
            url=with_heartbeat(broker_url.strip()), confirm_delivery=True
        )
        return broker
    if state_on_cluster and not broker_url:
        raise SettingsError(
            "NURTURE_REDIS_CLUSTER needs NURTURE_BROKER_URL: dramatiq's Redis broker cannot "
            "queue on a Redis Cluster; set it to amqp://... (RabbitMQ) or to a plain "
            "redis://... for the queues"
        )
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=broker_url or redis_url,
        namespace=namespace,
        heartbeat_timeout=heartbeat_timeout,
        maintenance_chance=maintenance_chance,
    )


def with_heartbeat(url: str, seconds: int = AMQP_HEARTBEAT_SECONDS) -> str:
    """``url`` (one or several ``;``-separated AMQP URLs) with ``heartbeat=<seconds>`` on
    each that names no heartbeat of its own."""
    out = []
    for one in url.split(";"):
        parts = urlsplit(one.strip())
        query = parse_qsl(parts.query, keep_blank_values=True)
        if not any(name == "heartbeat" for name, _ in query):
            query.append(("heartbeat", str(seconds)))
        out.append(urlunsplit(parts._replace(query=urlencode(query))))
    return ";".join(out)


class QuorumRabbitmqBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker declaring its three queues per queue as quorum queues.

    RabbitMQ fixes a queue's type when it is declared (no policy can change it), and
    dramatiq declares its queues itself, so the type goes into dramatiq's declare
    arguments; everything else (dead-letter routing, the 7-day dead-letter TTL, which
    quorum queues support since RabbitMQ 3.10) is dramatiq's unchanged.
    """

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        arguments["x-queue-type"] = "quorum"
        return arguments

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=xq_name(queue_name),
            durable=True,
            arguments={"x-queue-type": "quorum", "x-message-ttl": rabbitmq.DEAD_MESSAGE_TTL},
        )


def join_queue(broker: dramatiq.Broker, queue: str, timeout_ms: int) -> None:
    """Wait until ``queue`` and its delay queue are empty (tests and benchmarks).

    The two brokers' ``join`` take different arguments; this is the one call for both.
    Messages a worker has taken but not finished are not waited for: join the
    ``dramatiq.Worker`` too.

    Raises:
        dramatiq.errors.QueueJoinTimeout: When the queue is not empty in time.
    """
    if isinstance(broker, RedisBroker):
        broker.join(queue, interval=10, timeout=timeout_ms)
    elif isinstance(broker, RabbitmqBroker):
        broker.join(queue, min_successes=2, idle_time=20, timeout=timeout_ms)
    else:
        broker.join(queue, timeout=timeout_ms)


def _canonical_queues(broker: dramatiq.Broker) -> list[str]:
    return sorted({q_name(name) for name in broker.get_declared_queues()})


def queue_depths(broker: dramatiq.Broker) -> dict[str, dict[str, int]]:
    """Message counts per declared queue, for ``nurture status`` and the metrics.

    ``ready``: waiting for a worker; ``delayed``: in the delay queue, not yet taken by a
    worker (a worker holds the delayed messages it took until they are due, and they
    are not counted); ``dead``: in dramatiq's dead-letter queue (retries exhausted).

    Raises:
        redis.RedisError | dramatiq.errors.ConnectionError: When the broker does not
            answer (the caller reports the broker as unavailable).
    """
    queues = _canonical_queues(broker)
    if isinstance(broker, RedisBroker):
        return redis_queue_depths(broker.client, broker.namespace, queues)
    if isinstance(broker, StubBroker):
        return {queue: _stub_depth(broker, queue) for queue in queues}
    return {queue: _rabbitmq_depth(broker, queue) for queue in queues}


def _stub_depth(broker: StubBroker, queue: str) -> dict[str, int]:
    # dramatiq's in-memory broker, which the fast domain tests run on.
    queues = broker.queues
    ready = queues[queue].qsize() if queue in queues else 0
    delayed = queues[dq_name(queue)].qsize() if dq_name(queue) in queues else 0
    return {"ready": ready, "delayed": delayed, "dead": len(broker.dead_letters_by_queue[queue])}


def _rabbitmq_depth(broker: Any, queue: str) -> dict[str, int]:
    counts = []
    for name in (queue, dq_name(queue), xq_name(queue)):
        try:
            # Passive: only asks; never creates a queue or changes its arguments.
            frame = broker.channel.queue_declare(queue=name, passive=True)
            counts.append(int(frame.method.message_count))
        except pika.exceptions.ChannelClosedByBroker as exc:
            # 404: not declared yet (no message was ever queued there); the broker
            # closed the channel, so drop it and open a fresh one next time.
            del broker.channel
            if exc.reply_code != 404:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            counts.append(0)
        except pika.exceptions.AMQPError as exc:
            del broker.connection
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
    return {"ready": counts[0], "delayed": counts[1], "dead": counts[2]}
