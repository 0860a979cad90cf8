"""Prometheus metrics for ``GET /metrics``.

Two kinds: counters this HTTP process keeps itself (events accepted or refused, SendGrid
events, unsubscribes, requests), and figures read from Redis at scrape time by
:class:`StoreCollector` (touches per sequence and step, queue depth, schedule, lag),
because the worker processes that send write their counters into Redis, not here.

Each app gets its own registry (tests build many apps in one process).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.errors import ApiError, BrokerUnavailableError
from worker.runtime import Runtime
from worker.status import queue_depths

log = logging.getLogger(__name__)
_access_log = logging.getLogger("worker.http")  # the service's own lines: requests, refusals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector(Collector):
    """Reads the worker's Redis-side figures at each scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("nurture_redis_up", "1 when Redis answered this scrape, else 0")
        store = self.rt.store
        try:
            stats = store.stats()
            counters = store.global_counters(stats)
            schedule = store.schedule_stats()
            dead = store.dead_letter_count()
            suppressed = store.suppressed_count()
            pause = store.pauses.delivery()
        except redis.RedisError as exc:
            # /metrics must keep answering while Redis is down: that is when it matters.
            log.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _touches(stats)
        yield from self._queues()
        yield from self._schedule(schedule, counters)
        yield GaugeMetricFamily(
            "nurture_delivery_paused",
            "1 while delivery is paused by an account fault (revoked key, unverified sender)",
            value=0.0 if pause is None else 1.0,
        )
        yield GaugeMetricFamily(
            "nurture_dead_letters", "Dead letters kept for the operator", value=float(dead)
        )
        yield GaugeMetricFamily(
            "nurture_suppressed_addresses",
            "Addresses suppressed (unsubscribe, hard bounce, spam report)",
            value=float(suppressed),
        )
        worker = GaugeMetricFamily(
            "nurture_worker_counter",
            "The workers' global counters (sent: emails to leads, notified: notify emails "
            "to owners, posted: webhooks; lateness_sum, caught_up, ...)",
            labels=["name"],
        )
        for name, amount in sorted(counters.items()):
            worker.add_metric([name], amount)
        yield worker

    def _queues(self) -> Iterator[Metric]:
        # The broker may be RabbitMQ, up or down independently of Redis.
        up = GaugeMetricFamily(
            "nurture_broker_up", "1 when the message broker answered this scrape, else 0"
        )
        try:
            queues = queue_depths(self.rt)
        except BrokerUnavailableError as exc:
            log.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _queue_depths(queues)

    def _schedule(self, schedule: dict[str, Any], counters: dict[str, float]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "nurture_scheduled_touches",
            "Touches waiting in the durable schedule",
            value=float(schedule["scheduled"] or 0),
        )
        yield GaugeMetricFamily(
            "nurture_claimed_touches",
            "Touches claimed by a scheduler and not yet finished",
            value=float(schedule["claimed"] or 0),
        )
        next_due = schedule["next_due"]
        now = self.rt.clock.now().timestamp()
        overdue = max(0.0, now - float(next_due)) if next_due is not None else 0.0
        yield GaugeMetricFamily(
            "nurture_schedule_overdue_seconds",
            "How long the earliest scheduled touch is past due (grows when no scheduler runs)",
            value=overdue,
        )
        yield GaugeMetricFamily(
            "nurture_scheduler_lag_seconds",
            "Lateness of the most overdue touch at the scheduler's last claim",
            value=float(counters.get("scheduler_lag_last", 0.0)),
        )


def _touches(stats: dict[str, dict[str, dict[str, int]]]) -> Metric:
    touches = CounterMetricFamily(
        "nurture_touches",
        "Touches per sequence and step by outcome (sent, failed, retried, unknown, "
        "skipped) and SendGrid feedback (delivered, open, click)",
        labels=["sequence", "step", "outcome"],
    )
    for sequence, steps in stats.items():
        for step, values in steps.items():
            for outcome, value in values.items():
                touches.add_metric([sequence, step, outcome], value)
    return touches


def _queue_depths(queues: dict[str, dict[str, int]]) -> Metric:
    depth = GaugeMetricFamily(
        "nurture_queue_messages",
        "Messages in each dramatiq queue: ready, delayed, failed (dead-lettered)",
        labels=["queue", "state"],
    )
    for queue, states in queues.items():
        for state, value in states.items():
            depth.add_metric([queue, state], value)
    return depth


class HttpMetrics:
    """The HTTP process's own counters plus the Redis-side collector, in one registry."""

    def __init__(self, runtime: Runtime) -> None:
        # auto_describe off: registering must not call Redis (it may be down at start).
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.events_accepted = Counter(
            "nurture_events_accepted",
            "Lead events queued, by source (native, hubspot, pipedrive)",
            ["source"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "nurture_events_duplicate",
            "Lead events answered as duplicates (replayed ids), by source",
            ["source"],
            registry=r,
        )
        self.events_ignored = Counter(
            "nurture_events_ignored",
            "CRM notifications no mapping rule turns into a lead event",
            ["source"],
            registry=r,
        )
        self.events_refused = Counter(
            "nurture_events_refused",
            "Requests to the event routes refused, by source and reason",
            ["source", "reason"],
            registry=r,
        )
        self.sendgrid_events = Counter(
            "nurture_sendgrid_events",
            "SendGrid webhook events received, by event name and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.unsubscribes = Counter(
            "nurture_unsubscribes",
            "Unsubscribe requests done through the HTTP service (page or one-click)",
            ["via"],
            registry=r,
        )
        self.requests = Counter(
            "nurture_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "nurture_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route"],
            registry=r,
        )
        r.register(StoreCollector(runtime))

    def render(self) -> bytes:
        """The Prometheus text exposition (reads Redis: call it off the event loop)."""
        return generate_latest(self.registry)

    @contextmanager
    def counting_refusals(self, source: str) -> Iterator[None]:
        """Count and log each :class:`ApiError` leaving the block, then let it go on.

        Args:
            source: The event route's source label (native, hubspot, pipedrive, sendgrid).
        """
        try:
            yield
        except ApiError as exc:
            self.events_refused.labels(source, exc.code).inc()
            _access_log.info("%s refused: %s", source, exc.message, extra={"reason": exc.code})
            raise
