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

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from worker.actors import declare_actors
from worker.catalog import LiveCatalog, LoadedCatalog
from worker.clock import Clock, SystemClock
from worker.delivery import Delivery, build_delivery
from worker.errors import StoreUnavailableError
from worker.pipeline import EventProcessor
from worker.redis_server import embedded_redis_url
from worker.scheduler import Scheduler, SchedulerSettings
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
    heartbeat_timeout_ms: int = 60_000  # dramatiq: when a silent worker's messages are requeued


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
            broker: The dramatiq broker; by default a ``RedisBroker`` on the same Redis
                (tests of the domain pass a ``StubBroker`` and run messages inline).
            catalog: A catalog loaded already (tests share one); by default loaded
                from the settings' folders, now or (``load_catalog=False``) at first use.
        """
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.tuning = tuning or Tuning()
        self.namespace = namespace
        self.redis_url = settings.redis_url or embedded_redis_url(settings.state_dir)
        self.redis = redis.Redis.from_url(
            self.redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
        )
        self.store = Store(self.redis, prefix)
        self.broker: dramatiq.Broker = broker or RedisBroker(  # type: ignore[no-untyped-call]
            url=self.redis_url,
            namespace=namespace,
            heartbeat_timeout=self.tuning.heartbeat_timeout_ms,
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
            SendSettings(
                frequency_cap=settings.frequency_cap,
                send_timeout=settings.send_timeout,
                default_timezone=settings.default_timezone,
                from_email=settings.from_email or "",
                from_name=settings.from_name,
                postal_address=settings.postal_address or "",
                max_attempts=self.tuning.max_attempts,
            ),
        )
        self.actors = declare_actors(self.broker, self.store, self.processor, self.sender)

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
            ),
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

    @cached_property
    def unsubscribe_secret(self) -> str:
        configured = self.settings.unsubscribe_secret
        return self.store.unsubscribe_secret(configured.get_secret_value() if configured else None)

    def unsubscribe_url(self, lead_id: str) -> str:
        """The signed one-click unsubscribe URL of a lead."""
        token = make_token(self.unsubscribe_secret, lead_id)
        return f"{self.settings.public_url}/unsubscribe/{token}"

    def check_redis(self) -> None:
        """Raise StoreUnavailableError naming the URL when Redis does not answer."""
        if not self.store.ping():
            raise StoreUnavailableError(f"Redis at {self.redis_url} does not answer")

    def close(self) -> None:
        """Release connections and the delivery client."""
        if self._delivery is not None:
            self._delivery.close()
        self.broker.close()
        self.redis.close()
