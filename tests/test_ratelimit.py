"""The shared rate limiter on a real Redis, from threads and from separate processes.

SendGrid's rate-limit headers, as documented at
https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits:
``X-RateLimit-Limit`` (requests per refresh period), ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (unix seconds) on every answer, ``429`` once the limit is used up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.sendgrid_standin import SendGridStandIn
from worker.store.ratelimit import KEY_PREFIX, RateLimiter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_max_rate_is_shared_by_threads(client: redis.Redis) -> None:
    limiter = RateLimiter(client, "paced", max_rate=50)
    other = RateLimiter(redis.Redis(connection_pool=client.connection_pool), "paced", max_rate=50)
    taken: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 1.0

    def run(limiter: RateLimiter) -> None:
        while time.monotonic() < deadline:
            if limiter.acquire(max_wait=1.0) is None and time.monotonic() < deadline:
                with lock:
                    taken.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(lim,)) for lim in [limiter, other] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 50/s for one second across eight threads and two limiter objects: about 50.
    assert 40 <= len(taken) <= 56, len(taken)
    gaps = [b - a for a, b in zip(sorted(taken), sorted(taken)[1:], strict=False)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.02, abs=0.01)  # paced, not bursts
    assert limiter.key == KEY_PREFIX + "paced"


def test_a_429_blocks_every_limiter_until_the_reset(client: redis.Redis) -> None:
    first = RateLimiter(client)
    second = RateLimiter(redis.Redis(connection_pool=client.connection_pool))
    assert first.try_acquire() == 0.0
    reset = int(server_time(client)) + 3
    first.observe(
        429,
        {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )
    wait = second.try_acquire()
    assert reset - server_time(client) - 0.05 <= wait <= reset - server_time(client) + 0.05
    assert second.acquire(max_wait=0.2) == pytest.approx(wait, abs=0.3)  # gives up, counts nothing
    assert first.state()["refused"] == 1

    # A 429 with only Retry-After blocks for that long; none at all for one second.
    client.delete(first.key)
    first.observe(429, {"Retry-After": "2"})
    assert 1.8 <= second.try_acquire() <= 2.05
    client.delete(first.key)
    first.observe(429, None)
    assert 0.8 <= second.try_acquire() <= 1.05
    # A bogus reset far in the future is not believed.
    client.delete(first.key)
    first.observe(429, {"X-RateLimit-Reset": str(int(time.time()) + 10**9)})
    assert second.try_acquire() <= 1.05


def test_remaining_is_a_shared_budget_never_raised_within_a_period(client: redis.Redis) -> None:
    limiter = RateLimiter(client)
    reset = int(server_time(client)) + 2
    headers = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "3"}
    limiter.observe(202, {**headers, "X-RateLimit-Reset": str(reset)})
    # A late answer of the same period with more left does not raise the budget.
    other = RateLimiter(client)
    other.observe(202, {**headers, "X-RateLimit-Remaining": "9", "X-RateLimit-Reset": str(reset)})
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire()
    assert 0 < wait <= reset - server_time(client) + 0.05
    # An answer from an older period changes nothing.
    other.observe(202, {**headers, "X-RateLimit-Reset": str(reset - 60)})
    assert limiter.try_acquire() > 0

    # After the reset a new period is assumed to allow the known limit (10), no rush.
    time.sleep(max(0.0, reset - server_time(client)) + 0.05)
    assert [limiter.try_acquire() for _ in range(10)] == [0.0] * 10
    assert limiter.try_acquire() > 0
    # Its first real answer replaces the assumption.
    limiter.observe(
        202, {**headers, "X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(reset + 5)}
    )
    assert limiter.state()["remaining"] == 5
    assert "provisional" not in limiter.state()


def test_plenty_left_in_a_known_period_costs_no_round_trip(client: redis.Redis) -> None:
    limiter = RateLimiter(client)
    reset = str(int(server_time(client)) + 30)
    limiter.observe(
        202, {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "90", "X-RateLimit-Reset": reset}
    )
    client.hset(limiter.key, "remaining", 42)  # as if other processes had counted down
    limiter.observe(
        202, {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "80", "X-RateLimit-Reset": reset}
    )
    assert limiter.state()["remaining"] == 42  # not written: plenty left, period known
    limiter.observe(
        202, {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "7", "X-RateLimit-Reset": reset}
    )
    assert limiter.state()["remaining"] == 7  # low: written
    limiter.observe(202, {"X-Message-Id": "abc"})  # no rate-limit headers: nothing to learn
    with pytest.raises(ValueError):
        RateLimiter(client, max_rate=-1)


_SENDER = textwrap.dedent(
    """
    import json, sys, time
    import redis
    from worker.delivery.base import Message, SendResult
    from worker.delivery.sendgrid import SendGridDelivery
    from worker.errors import TransientDeliveryError
    from worker.store.ratelimit import RateLimiter

    url, key, redis_url, tag, count, shared = sys.argv[1:7]
    limiter = RateLimiter(redis.Redis.from_url(redis_url)) if shared == "1" else None
    delivery = SendGridDelivery(key, url, timeout=5, concurrency=8, limiter=limiter)
    pending = [
        Message(key=f"{tag}-{i}.s.1.t", to_email=f"{tag}{i}@example.com", to_name=None,
                from_email="hello@nurture.example", from_name=None, subject="Hi", text="Hi",
                html=None, unsubscribe_url="https://nurture.example/u", lead_id=f"{tag}-{i}",
                sequence="s", step="t")
        for i in range(int(count))
    ]
    sent = refused = 0
    while pending:
        results = delivery.send_many(pending)
        retry, wait = [], 0.05
        for message, result in zip(pending, results):
            if isinstance(result, SendResult):
                sent += 1
            elif isinstance(result, TransientDeliveryError):
                refused += 1
                retry.append(message)
                wait = max(wait, result.retry_after or 0.0)
            else:
                raise result
        pending = retry
        if pending:
            time.sleep(wait)  # as the queue actor does: the provider's retry_after
    delivery.close()
    print(json.dumps({"sent": sent, "refused": refused}))
    """
)


def _run_senders(standin: SendGridStandIn, redis_url: str, shared: bool, tmp: Path) -> int:
    script = tmp / "sender.py"
    script.write_text(_SENDER)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                standin.url,
                standin.api_key,
                redis_url,
                f"p{i}",
                "30",
                "1" if shared else "0",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        for i in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    assert sum(r["sent"] for r in results) == 90
    return int(standin.stats()["rate_limited"])


@pytest.mark.slow  # starts the CLI or worker processes
def test_processes_sharing_the_limiter_slow_down_together(redis_url: str, tmp_path: Path) -> None:
    """Three processes, 30 messages each, against SendGrid's 20 requests/s: with the
    shared limiter they learn the limit from each other's answers and stay under it;
    each on its own (the old behaviour) they keep running into 429s."""
    with SendGridStandIn() as standin:
        standin.rate_limit(20, period=1)
        shared = _run_senders(standin, redis_url, True, tmp_path)
        received = standin.messages
        keys = [m.custom_args["lead_id"] for m in received]
        assert len(keys) == len(set(keys)) == 90  # each exactly once
        standin.reset()
        standin.rate_limit(20, period=1)
        alone = _run_senders(standin, redis_url, False, tmp_path)
    print(f"RATELIMIT-RESULT 429s shared={shared} alone={alone}")
    # Shared: 429s only while the first period is discovered (at most what is in flight).
    assert shared <= 24, (shared, alone)
    assert alone > 2 * shared, (shared, alone)
