"""A dramatiq worker process whose only actor does nothing: the raw-dramatiq baseline.

It is wired exactly like ``nurture worker``: the same ``Runtime`` (so the same
``RedisBroker`` URL, namespace, heartbeat timeout and middleware) and a
``dramatiq.Worker`` with the same thread count and ``worker_timeout``, consuming
every queue. Only the scheduler thread is left out: raw dramatiq has none.

    python -m benchmarks.noop_worker --threads 8

It waits for the key ``bench:noop:go`` (so several processes start consuming at the
same moment), runs until SIGTERM, and exits after finishing in-flight messages.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

import dramatiq

from worker.runtime import Runtime
from worker.settings import load_settings

NOOP_QUEUE = "bench-noop"
NOOP_ACTOR = "bench_noop"
GO_KEY = "bench:noop:go"
READY_KEY = "bench:noop:ready"


def declare_noop(runtime: Runtime) -> dramatiq.Actor[..., None]:
    """The no-op actor, declared on the runtime's broker like the real actors."""

    def bench_noop(*args: Any) -> None:
        return None

    return dramatiq.Actor(
        bench_noop,
        broker=runtime.broker,
        actor_name=NOOP_ACTOR,
        queue_name=NOOP_QUEUE,
        priority=0,
        options={"max_retries": 20, "min_backoff": 500, "max_backoff": 60_000},
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noop_worker")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    runtime = Runtime(load_settings(), load_catalog=False)
    declare_noop(runtime)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.redis.sadd(READY_KEY, str(threading.get_native_id()))
    deadline = time.monotonic() + 120
    while not runtime.redis.exists(GO_KEY):
        if stop.is_set() or time.monotonic() > deadline:
            return 1
        time.sleep(0.002)
    worker = dramatiq.Worker(runtime.broker, worker_threads=args.threads, worker_timeout=200)
    worker.start()
    stop.wait()
    worker.stop(timeout=60_000)
    runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
