"""The composition root: builds settings' Redis client, the store, the broker, the
event processor, the touch sender, the actors and the scheduler, and hands each what
it uses.

One ``Runtime`` per process (tests make one per test). The domain classes
(``EventProcessor``, ``TouchSender``, ``Scheduler``) never see it: they receive their
store, catalog getter, clock, enqueue callable and slice of settings from here. The
CLI and the HTTP service take the runtime itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import dramatiq
import dramatiq.errors
import redis
from redis.cluster import RedisCluster

from worker.actors import declare_actors
from worker.broker import make_broker, queue_depths, redact_url
from worker.catalog import LiveCatalog, LoadedCatalog
from worker.clock import Clock, SystemClock
from worker.crm.hubspot_api import HubSpotContacts, HubSpotRateLimiter
from worker.crm.hubspot_sync import fetch_handler
from worker.crm.mapping import Mapping as CrmMapping
from worker.delivery import Delivery, build_delivery
from worker.errors import BrokerUnavailableError, SettingsError, StoreUnavailableError
from worker.pipeline import EventProcessor
from worker.reach import Reach
from worker.redis_server import embedded_redis_url
from worker.scheduler import Scheduler, SchedulerSettings
from worker.senders import defaults_from
from worker.sending import SendSettings, TouchSender
from worker.sequences import Catalog
from worker.settings import Settings
from worker.store import Store
from worker.tokens import make_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuning:
    """Knobs tests and benchmarks turn; defaults suit production."""

    touches_per_message: int = 20  # due touches batched into one queue message
    events_per_message: int = 100
    max_attempts: int = 8  # transient delivery failures before a touch is dead-lettered


def send_settings(settings: Settings, tuning: Tuning) -> SendSettings:
    """The sender's slice of the settings."""
    return SendSettings(
        frequency_cap=settings.frequency_cap,
        send_timeout=settings.send_timeout,
        default_timezone=settings.default_timezone,
        from_email=settings.from_email or "",
        from_name=settings.from_name,
        postal_address=settings.postal_address or "",
        max_attempts=tuning.max_attempts,
        sender=defaults_from(settings),
        unsubscribe_mailbox=settings.unsubscribe_mailbox,
        reach=Reach(
            notify_to=settings.notify_to,
            notify_locale=settings.notify_locale,
            webhook_secret=(
                settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
            ),
            webhook_targets=dict(settings.webhook_targets),
            webhook_timeout=settings.webhook_timeout,
        ),
    )


def state_client(url: str, *, cluster: bool = False, connections: int = 100) -> redis.Redis:
    """The state client: ``redis.Redis``, or with ``NURTURE_REDIS_CLUSTER`` a
    ``RedisCluster`` that finds the other nodes from the one the URL names.

    Every thread of the process may use Redis at once: the worker's threads and the
    SendGrid pool's (the shared rate limiter takes a turn per request), plus the
    scheduler and a margin. redis-py caps a plain pool at ``connections`` and raises
    beyond; the single-Redis client's blocking pool of that size waits for a free one
    instead.

    Both offer the same commands, scripts, pipelines and locks; typed as ``redis.Redis``
    (the cluster client is not a subclass), which is what the store relies on.

    Raises:
        SettingsError: When the URL is not a Redis URL, naming NURTURE_REDIS_URL.
    """
    options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 10}
    try:
        if cluster:
            return cast(redis.Redis, RedisCluster.from_url(url, **options))
        pool = redis.BlockingConnectionPool.from_url(
            url,
            health_check_interval=30,
            max_connections=connections,
            timeout=10,  # longest wait for a free connection
            **options,
        )
        return redis.Redis.from_pool(pool)  # closing the client closes the pool
    except (ValueError, redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise SettingsError(
            f"NURTURE_REDIS_URL={redact_url(url)!r} is not a usable Redis URL ({exc}); "
            "use e.g. redis://127.0.0.1:6379/0"
            + (" naming a node of the cluster" if cluster else "")
        ) from None


class Runtime:
    """Wires one process together."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        prefix: str = "nurture",
        namespace: str = "dramatiq",
        delivery: Delivery | None = None,
        tuning: Tuning | None = None,
        load_catalog: bool = True,
        broker: dramatiq.Broker | None = None,
        catalog: LiveCatalog | None = None,
    ) -> None:
        """Wire one process.

        Args:
            broker: The dramatiq broker; by default the one ``NURTURE_BROKER_URL`` names
                (RabbitMQ), else a ``RedisBroker`` on the state Redis (tests of the
                domain pass a ``StubBroker`` and run messages inline).
            catalog: A catalog loaded already (tests share one); by default loaded
                from the settings' folders, now or (``load_catalog=False``) at first use.
        """
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.tuning = tuning or Tuning()
        self.namespace = namespace
        self.redis_url = settings.redis_url or embedded_redis_url(settings.state_dir)
        connections = settings.worker_threads + settings.sendgrid_concurrency + 16
        self.redis = state_client(
            self.redis_url, cluster=settings.redis_cluster, connections=connections
        )
        self.store = Store(self.redis, prefix, settings.state_shards)
        self.broker: dramatiq.Broker = broker or make_broker(
            self.redis_url,
            settings.broker_url,
            namespace,
            round(settings.broker_heartbeat_timeout * 1000),
            maintenance_chance=settings.broker_maintenance_chance,
            quorum_queues=settings.broker_quorum_queues,
            state_on_cluster=settings.redis_cluster,
        )
        self._delivery = delivery
        self._catalog = catalog or (LiveCatalog(settings) if load_catalog else None)
        self.processor = EventProcessor(
            self.store, self._current_catalog, self.clock, settings.default_timezone
        )
        self.sender = TouchSender(
            self.store,
            self._current_loaded,
            self.clock,
            lambda: self.delivery,
            # Looked up at each call, so a wrapper set on the runtime (benchmarks) applies.
            lambda lead_id: self.unsubscribe_url(lead_id),
            send_settings(settings, self.tuning),
        )
        self._hubspot: HubSpotContacts | None = None
        self.actors = declare_actors(
            self.broker,
            self.store,
            self.processor,
            self.sender,
            fetch_handler(self.processor, self.hubspot, self._hubspot_mapping, self.store.dead.add),
        )

    def hubspot(self) -> HubSpotContacts:
        """The HubSpot contacts reader, built at first use (``NURTURE_HUBSPOT_TOKEN``).

        Raises:
            SettingsError: When no token is set.
        """
        if self._hubspot is None:
            self._hubspot = HubSpotContacts.from_settings(
                self.settings, HubSpotRateLimiter(self.redis)
            )
        return self._hubspot

    def _hubspot_mapping(self) -> CrmMapping:
        return self.catalog.current.mapping("hubspot")

    def _current_loaded(self) -> LoadedCatalog:
        return self.catalog.current

    def _current_catalog(self) -> Catalog:
        return self.catalog.current.catalog

    def scheduler(self) -> Scheduler:
        """A new scheduler queueing touches on this runtime's ``send_touches`` actor."""
        settings = self.settings
        return Scheduler(
            self.store,
            self.clock,
            self.actors.send_touches.send,
            SchedulerSettings(
                batch=settings.scheduler_batch,
                claim_lease=settings.claim_lease,
                interval=settings.scheduler_interval,
                catchup_after=settings.catchup_after,
                catchup_spread=settings.catchup_spread,
                touches_per_message=self.tuning.touches_per_message,
                probe_interval=settings.pause_probe_interval,
            ),
            probe=self.probe_delivery,
            paused_sequences=self.paused_sequences,
        )

    @property
    def catalog(self) -> LiveCatalog:
        if self._catalog is None:
            self._catalog = LiveCatalog(self.settings)
        return self._catalog

    @property
    def delivery(self) -> Delivery:
        if self._delivery is None:
            self._delivery = build_delivery(self.settings, self.redis)
        return self._delivery

    def paused_sequences(self) -> set[str]:
        """Sequences paused now: ``paused: true`` in their file, or ``nurture pause``."""
        in_files = {s.id for s in self.catalog.current.catalog.sequences.values() if s.paused}
        return in_files | set(self.store.pauses.paused_sequences())

    def probe_delivery(self) -> str | None:
        """Whether the delivery backend can send again (see ``Delivery.probe``), checking
        what the pause's reason says failed."""
        probe = getattr(self.delivery, "probe", None)  # wrappers in benchmarks may lack it
        if probe is None:
            return None
        pause = self.store.pauses.delivery()
        problem: str | None = probe(pause.reason if pause else "")
        return problem

    @cached_property
    def unsubscribe_secret(self) -> str:
        configured = self.settings.unsubscribe_secret
        return self.store.unsubscribe_secret(configured.get_secret_value() if configured else None)

    def unsubscribe_url(self, lead_id: str) -> str:
        """The signed one-click unsubscribe URL of a lead."""
        token = make_token(self.unsubscribe_secret, lead_id)
        return f"{self.settings.public_url}/unsubscribe/{token}"

    def check_redis(self, *, older_layout: bool = False) -> None:
        """Raise StoreUnavailableError naming the URL when Redis does not answer, and
        SettingsError when its key layout is not this worker's (see
        :meth:`Store.check_layout`; ``older_layout``: an older one, or one being
        migrated, is accepted, as the HTTP services do)."""
        if not self.store.ping():
            raise StoreUnavailableError(
                f"Redis at {redact_url(self.redis_url)} does not answer; start it, or fix "
                "NURTURE_REDIS_URL"
            )
        self.store.check_layout(older=older_layout)

    def broker_depths(self) -> dict[str, dict[str, int]]:
        """Ready, delayed and dead message counts per declared queue, from whichever
        broker carries the queues (also the broker's health check).

        Raises:
            BrokerUnavailableError: Naming the broker's setting when it does not answer.
        """
        try:
            return queue_depths(self.broker)
        except (redis.RedisError, dramatiq.errors.ConnectionError) as exc:
            raise BrokerUnavailableError(
                f"the message broker ({self.broker_name}) does not answer: {exc}; "
                "check that it runs and that the setting points at it"
            ) from exc

    @property
    def broker_name(self) -> str:
        """Where the queues are, for status and errors (password masked)."""
        if self.settings.broker_url:
            return f"NURTURE_BROKER_URL {redact_url(self.settings.broker_url)}"
        return f"NURTURE_REDIS_URL {redact_url(self.redis_url)}"

    def close(self) -> None:
        """Release connections and the delivery client."""
        if self._delivery is not None:
            self._delivery.close()
        self.broker.close()
        self.redis.close()
