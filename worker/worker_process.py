"""``nurture worker``: dramatiq workers, the scheduler and live reload in one process."""

from __future__ import annotations

import logging
import threading
import time

import dramatiq

from worker.runtime import Runtime

log = logging.getLogger(__name__)

RELOAD_INTERVAL = 2.0


def wait_for_redis(runtime: Runtime, stop: threading.Event, limit: float = 60.0) -> None:
    """Wait for Redis at start-up (e.g. started together by docker compose), then give up
    with an error naming the URL."""
    deadline = time.monotonic() + limit
    while not runtime.store.ping():
        if time.monotonic() > deadline or stop.is_set():
            runtime.check_redis()  # raises StoreUnavailableError naming the URL
        log.warning("waiting for Redis at %s", runtime.redis_url)
        stop.wait(1.0)


def run_worker(
    runtime: Runtime,
    stop: threading.Event,
    *,
    threads: int | None = None,
    schedule: bool = True,
) -> None:
    """Run until ``stop`` is set, then shut down without losing work.

    On stop: the scheduler stops claiming; dramatiq finishes the messages in flight
    and puts prefetched ones back on the queue; claims not yet sent return to the
    schedule when their lease runs out.
    """
    wait_for_redis(runtime, stop)
    worker = dramatiq.Worker(
        runtime.broker,
        worker_threads=threads or runtime.settings.worker_threads,
        worker_timeout=200,
    )
    worker.start()
    scheduler = runtime.scheduler()
    if schedule:
        scheduler.start()
    log.info(
        "worker running: %d threads, sequences %s, delivery %s",
        threads or runtime.settings.worker_threads,
        runtime.catalog.current.catalog.version,
        runtime.settings.delivery,
    )
    try:
        while not stop.wait(RELOAD_INTERVAL):
            try:
                runtime.catalog.reload_if_changed()
            except Exception:
                log.exception("live reload failed; the last good sequences keep running")
    finally:
        log.info("stopping: finishing in-flight work")
        scheduler.stop()
        worker.stop(timeout=60_000)
        runtime.close()
        log.info("stopped")
