"""The worker's Redis client serves every thread of a busy process at once.

A ``nurture worker`` process has its worker threads and up to
``NURTURE_SENDGRID_CONCURRENCY`` SendGrid threads, each of which takes a turn from the
shared rate limiter in Redis per request. redis-py's plain connection pool stops at 100
connections and raises ``MaxConnectionsError`` beyond (redis-py's ``ConnectionPool``:
"max_connections ... defaults to 100"), which in the 100,000-touch burst failed the
recording of touches already sent. The runtime's pool is sized for every thread and
waits for a free connection rather than failing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis

from worker.runtime import Runtime
from worker.settings import Settings


def test_more_threads_than_connections_wait_for_one_instead_of_failing(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime(make_settings(sendgrid_concurrency=128), load_catalog=False)
    errors: list[BaseException] = []
    results: list[Any] = []
    start = threading.Barrier(200)

    def hold_a_connection(index: int) -> None:
        start.wait()
        try:  # BLPOP on an empty list keeps the connection busy for its timeout
            results.append(runtime.redis.blpop([f"nurture:test:empty:{index}"], timeout=0.3))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hold_a_connection, args=(i,)) for i in range(200)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        runtime.close()
    assert errors == []
    assert results == [None] * 200
    pool = runtime.redis.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 8 + 128 + 16
