"""The process-wide wiring: settings, Redis, store, broker, actors, catalog, delivery.

One ``Runtime`` per process (tests make one per test). Everything the actors, the
scheduler, the CLI and the HTTP service need hangs off it, so nothing reads globals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import redis
from dramatiq.brokers.redis import RedisBroker

from worker.catalog import LiveCatalog
from worker.clock import Clock, SystemClock
from worker.delivery import Delivery, build_delivery
from worker.errors import StoreUnavailableError
from worker.redis_server import embedded_redis_url
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
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.tuning = tuning or Tuning()
        self.redis_url = settings.redis_url or embedded_redis_url(settings.state_dir)
        self.redis = redis.Redis.from_url(
            self.redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
        )
        self.store = Store(self.redis, prefix)
        self.broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=self.redis_url,
            namespace=namespace,
            heartbeat_timeout=self.tuning.heartbeat_timeout_ms,
        )
        from worker.actors import declare_actors

        self.actors = declare_actors(self)
        self._delivery = delivery
        self._catalog = LiveCatalog(settings) if load_catalog else None

    @property
    def catalog(self) -> LiveCatalog:
        if self._catalog is None:
            self._catalog = LiveCatalog(self.settings)
        return self._catalog

    @property
    def delivery(self) -> Delivery:
        if self._delivery is None:
            self._delivery = build_delivery(self.settings)
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
