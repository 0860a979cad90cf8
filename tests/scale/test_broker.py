"""The broker choice (worker/broker.py) on the real things: dramatiq workers running
actors that are delayed, retried and dead-lettered, on RabbitMQ and on Redis, and the
queue depths ``nurture status`` shows for each.

References: dramatiq's brokers, https://dramatiq.io/reference.html#brokers (Redis and
RabbitMQ, delays, retries, dead-letter queues); RabbitMQ publisher confirms,
https://www.rabbitmq.com/docs/confirms#publisher-confirms; quorum queues,
https://www.rabbitmq.com/docs/quorum-queues.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from tests.rabbitmq import AmqpTarget, RabbitNode, answers, start_rabbitmq
from worker.broker import (
    broker_kind,
    join_queue,
    make_broker,
    queue_depths,
    redact_url,
    with_heartbeat,
)
from worker.errors import SettingsError

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


# -- choosing the broker ----------------------------------------------------------


def test_no_broker_url_queues_in_the_state_redis(redis_url: str) -> None:
    broker = make_broker(redis_url, None, namespace="ns-a", heartbeat_timeout=5000)
    try:
        assert isinstance(broker, RedisBroker)
        assert broker.namespace == "ns-a"
        assert broker.heartbeat_timeout == 5000
        assert broker.client.connection_pool.connection_kwargs["port"] == int(
            redis_url.rsplit(":", 1)[1].split("/")[0]
        )
    finally:
        broker.close()


def test_a_redis_broker_url_queues_in_that_redis(redis_url: str) -> None:
    broker = make_broker("redis://127.0.0.1:1/0", redis_url, state_on_cluster=True)
    try:
        assert isinstance(broker, RedisBroker)
        assert broker.client.ping()
    finally:
        broker.close()


def test_an_amqp_url_selects_rabbitmq_with_publisher_confirms(amqp: AmqpTarget) -> None:
    broker = make_broker("redis://127.0.0.1:1/0", amqp.url)
    try:
        assert isinstance(broker, RabbitmqBroker)
        assert broker.confirm_delivery is True
        assert broker_kind("amqp://a/x;amqps://b/x") == "rabbitmq"
    finally:
        broker.close()


def test_rabbitmq_connections_ask_for_a_10_s_heartbeat_unless_the_url_names_one(
    amqp: AmqpTarget, rabbitmq_node: RabbitNode
) -> None:
    """RabbitMQ proposes 60 s; the worker asks for 10 s (https://www.rabbitmq.com/docs/heartbeats:
    5-20 s optimal) so a dead host's unacknowledged messages return in ~30 s, not 2-3 min;
    ``?heartbeat=`` on the URL wins. Checked on what RabbitMQ negotiated."""
    assert with_heartbeat("amqp://u:p@a:5672/v;amqps://b/v?heartbeat=30&x=1") == (
        "amqp://u:p@a:5672/v?heartbeat=10;amqps://b/v?heartbeat=30&x=1"
    )
    if not amqp.own_vhost:  # the vhost tells our connections apart from others'
        pytest.fail("the tests' RabbitMQ gave no vhost of our own")
    for url, expected in ((amqp.url, 10), (f"{amqp.url}?heartbeat=25", 25)):
        broker = make_broker("redis://127.0.0.1:1/0", url)
        try:
            declare(broker, amqp.queue("beat")).record.send("x")  # opens the connection
            listed = rabbitmq_node.ctl("list_connections", "-q", "vhost", "timeout").stdout
            timeouts = {
                int(parts[1])
                for parts in (line.split() for line in listed.splitlines())
                if len(parts) == 2 and parts[0] == amqp.vhost
            }
            assert timeouts == {expected}, listed
        finally:
            broker.close()


def test_a_cluster_without_a_broker_url_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="NURTURE_BROKER_URL") as caught:
        make_broker("redis://127.0.0.1:7000/0", None, state_on_cluster=True)
    assert "Redis Cluster" in str(caught.value)


def test_an_unknown_scheme_is_refused_without_showing_the_password() -> None:
    with pytest.raises(SettingsError, match="NURTURE_BROKER_URL") as caught:
        make_broker("redis://127.0.0.1:1/0", "kafka://user:hunter2@host:9092")
    assert "hunter2" not in str(caught.value)
    assert "kafka://user:***@host:9092" in str(caught.value)
    assert redact_url("amqp://u:p@a/v;amqp://u:p@b/v") == "amqp://u:***@a/v;amqp://u:***@b/v"


# -- real workers: delay, retry, dead letter ----------------------------------------


@dataclass
class Probe:
    """What the test actors did, with when."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, key: str) -> int:
        with self.lock:
            self.runs.setdefault(key, []).append(time.monotonic())
            return len(self.runs[key])

    def count(self, key: str) -> int:
        with self.lock:
            return len(self.runs.get(key, []))


@dataclass
class Rig:
    broker: dramatiq.Broker
    queue: str
    probe: Probe
    record: dramatiq.Actor[[str], None]
    flaky: dramatiq.Actor[[str], None]
    doomed: dramatiq.Actor[[str], None]


def declare(broker: dramatiq.Broker, queue: str) -> Rig:
    probe = Probe()

    def record(key: str) -> None:
        probe.note(key)

    def flaky(key: str) -> None:
        # Fails twice, then works: dramatiq's Retries middleware re-enqueues it (delayed).
        if probe.note(key) < 3:
            raise RuntimeError("transient")

    def doomed(key: str) -> None:
        probe.note(key)
        raise RuntimeError("permanent")

    retry = {"min_backoff": 100, "max_backoff": 200}
    return Rig(
        broker=broker,
        queue=queue,
        probe=probe,
        record=dramatiq.Actor(
            record, broker=broker, actor_name=f"record_{queue}", queue_name=queue,
            priority=0, options={},
        ),
        flaky=dramatiq.Actor(
            flaky, broker=broker, actor_name=f"flaky_{queue}", queue_name=queue,
            priority=0, options={"max_retries": 5, **retry},
        ),
        doomed=dramatiq.Actor(
            doomed, broker=broker, actor_name=f"doomed_{queue}", queue_name=queue,
            priority=0, options={"max_retries": 1, **retry},
        ),
    )  # fmt: skip


@pytest.fixture(params=["rabbitmq", "redis"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    if request.param == "rabbitmq":
        amqp: AmqpTarget = request.getfixturevalue("amqp")
        broker = make_broker("redis://127.0.0.1:1/0", amqp.url)
        queue = amqp.queue("probe")
    else:
        broker = make_broker(request.getfixturevalue("redis_url"), None, heartbeat_timeout=5000)
        queue = "probe"
    yield declare(broker, queue)
    broker.close()


def test_workers_run_delayed_retried_and_dead_lettered_messages(rig: Rig) -> None:
    queue = rig.queue
    sent_at = time.monotonic()
    rig.record.send("now")
    rig.record.send_with_options(args=("later",), delay=1500)
    assert queue_depths(rig.broker)[queue] == {"ready": 1, "delayed": 1, "dead": 0}

    worker = dramatiq.Worker(rig.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        rig.flaky.send("flaky")
        rig.doomed.send("doomed")
        probe = rig.probe
        wait_for(lambda: probe.count("now") == 1, what="the immediate message")
        wait_for(lambda: probe.count("later") == 1, what="the delayed message")
        assert probe.runs["later"][0] - sent_at >= 1.5
        wait_for(lambda: probe.count("flaky") == 3, what="the retried message")
        wait_for(lambda: probe.count("doomed") == 2, what="the doomed message's retry")
        wait_for(lambda: queue_depths(rig.broker)[queue]["dead"] == 1, what="the dead letter")
        join_queue(rig.broker, queue, timeout_ms=10_000)
        worker.join()
        time.sleep(0.5)  # nothing more runs: no extra retry, no duplicate
        assert {k: len(v) for k, v in probe.runs.items()} == {
            "now": 1, "later": 1, "flaky": 3, "doomed": 2,
        }  # fmt: skip
        assert queue_depths(rig.broker)[queue] == {"ready": 0, "delayed": 0, "dead": 1}
    finally:
        worker.stop(timeout=10_000)


# -- RabbitMQ specifics --------------------------------------------------------------


def test_rabbitmq_queues_are_quorum_queues(amqp: AmqpTarget, rabbitmq_node: RabbitNode) -> None:
    broker = make_broker("redis://127.0.0.1:1/0", amqp.url)
    try:
        rig = declare(broker, amqp.queue("typed"))
        rig.record.send("x")
        listed = rabbitmq_node.ctl(
            "list_queues", "-p", amqp.vhost, "name", "type", "arguments",
            "--no-table-headers", "--quiet",
        ).stdout  # fmt: skip
        listed = "\n".join(line for line in listed.splitlines() if rig.queue in line)
        types = {line.split()[0]: line.split()[1] for line in listed.splitlines() if line}
        assert types == {
            rig.queue: "quorum",
            f"{rig.queue}.DQ": "quorum",
            f"{rig.queue}.XQ": "quorum",
        }
        assert "x-dead-letter-routing-key" in listed
    finally:
        broker.close()


def test_publisher_confirms_redeclare_a_deleted_queue_instead_of_dropping(
    amqp: AmqpTarget,
) -> None:
    """Without confirms, a publish to a queue deleted behind the broker's back is silently
    dropped by RabbitMQ (unroutable); with them dramatiq sees it and re-declares."""
    broker = make_broker("redis://127.0.0.1:1/0", amqp.url)
    try:
        rig = declare(broker, amqp.queue("confirm"))
        rig.record.send("first")
        assert queue_depths(broker)[rig.queue]["ready"] == 1
        connection = pika.BlockingConnection(pika.URLParameters(amqp.url))
        connection.channel().queue_delete(rig.queue)
        connection.close()
        assert queue_depths(broker)[rig.queue]["ready"] == 0
        rig.record.send("second")
        assert queue_depths(broker)[rig.queue]["ready"] == 1
    finally:
        broker.close()


def test_queue_depths_of_undeclared_rabbitmq_queues_are_zero(amqp: AmqpTarget) -> None:
    broker = make_broker("redis://127.0.0.1:1/0", amqp.url)
    try:
        broker.declare_queue(amqp.queue("never-used"))  # declared here, not on the server
        name = amqp.queue("never-used")
        assert queue_depths(broker) == {name: {"ready": 0, "delayed": 0, "dead": 0}}
        # The 404 closed a channel; the broker still works afterwards.
        rig = declare(broker, amqp.queue("after"))
        rig.record.send("x")
        assert queue_depths(broker)[rig.queue]["ready"] == 1
    finally:
        broker.close()


# -- a worker host dies mid-message -----------------------------------------------------

WORKER_SCRIPT = """
import os, sys, time, pathlib, dramatiq
from worker.broker import make_broker

url, queue, log = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
broker = make_broker("redis://127.0.0.1:1/0", url)

def slow(key):
    with log.open("a") as f:
        f.write(f"start {key} {os.getpid()}\\n")
    if not (log.parent / "fast").exists():
        time.sleep(60)
    with log.open("a") as f:
        f.write(f"done {key} {os.getpid()}\\n")

dramatiq.Actor(slow, broker=broker, actor_name="slow", queue_name=queue, priority=0, options={})
worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=200)  # as nurture worker
worker.start()
print("ready", flush=True)
time.sleep(120)
"""


@dataclass
class KilledMidMessage:
    """What :func:`kill_mid_message` saw: the two workers' pids, who ran what (``start``
    and ``done`` lines), and the seconds from the kill until the message was done."""

    first: int
    second: int
    runs: list[list[str]]
    seconds: float


def kill_mid_message(broker: dramatiq.Broker, url: str, queue: str, tmp: Path) -> KilledMidMessage:
    """A worker process (WORKER_SCRIPT on ``url``) takes a message and is killed -9 in
    the middle of it; a second one is started and runs it again once the broker gives it
    back."""
    script, log = tmp / "slow_worker.py", tmp / "runs.log"
    script.write_text(WORKER_SCRIPT)

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(script), url, queue, str(log)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    first = start()
    dramatiq.Actor(
        lambda key: None, broker=broker, actor_name="slow", queue_name=queue,
        priority=0, options={},
    ).send("m1")  # fmt: skip
    wait_for(lambda: log.exists() and "start m1" in log.read_text(), what="first worker")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    (tmp / "fast").touch()
    second = start()
    try:
        wait_for(lambda: "done m1" in log.read_text(), timeout=60, what="redelivery")
    finally:
        second.kill()
        second.wait()
    seconds = time.monotonic() - killed_at
    lines = log.read_text().split()
    runs = [lines[i : i + 3] for i in range(0, len(lines), 3)]
    return KilledMidMessage(first.pid, second.pid, runs, seconds)


def test_a_killed_worker_process_s_message_is_redelivered_to_another(
    amqp: AmqpTarget, tmp_path: Path
) -> None:
    """RabbitMQ requeues the unacked message of a consumer whose connection dies (kill -9),
    so another worker host runs it: nothing lost."""
    queue = amqp.queue("slow")
    broker = make_broker("redis://127.0.0.1:1/0", amqp.url)
    try:
        seen = kill_mid_message(broker, amqp.url, queue, tmp_path)
        assert seen.runs == [
            ["start", "m1", str(seen.first)],
            ["start", "m1", str(seen.second)],
            ["done", "m1", str(seen.second)],
        ]
        assert queue_depths(broker)[queue] == {"ready": 0, "delayed": 0, "dead": 0}
    finally:
        broker.close()


@pytest.mark.slow
def test_a_rabbitmq_node_of_our_own_starts_where_none_runs(tmp_path: Path) -> None:
    """The fallback of the ``rabbitmq_node`` fixture: Debian's rabbitmq-server on free
    ports, with files under the test's directory, stopped afterwards."""
    node = start_rabbitmq(tmp_path / "node")
    try:
        assert node.port != 5672 and answers(node.port)
        broker = make_broker("redis://127.0.0.1:1/0", node.url("/"))
        rig = declare(broker, "own-node")
        rig.record.send("x")
        assert queue_depths(broker)["own-node"]["ready"] == 1
        broker.close()
    finally:
        node.stop()
    assert node.process is not None and node.process.returncode is not None
    assert not answers(node.port)


def test_a_killed_worker_s_redis_message_comes_back_after_the_heartbeat_timeout(
    redis_url: str, tmp_path: Path
) -> None:
    """dramatiq's Redis broker requeues a dead worker's unacked messages at a queue
    *maintenance* run once its heartbeat is ``heartbeat_timeout`` ms old; a fetch starts
    one with a chance of ``maintenance_chance`` in a million (``RedisBroker``'s docstring
    and ``dispatch.lua``, github.com/Bogdanp/dramatiq, dramatiq/brokers/redis.py). With
    NURTURE_BROKER_HEARTBEAT_TIMEOUT (15 s) and NURTURE_BROKER_MAINTENANCE_CHANCE (5 %),
    the default 60 s and 0.1 % took 60-90 s or more."""
    broker = make_broker(redis_url, None)
    try:
        assert isinstance(broker, RedisBroker)
        assert (broker.heartbeat_timeout, broker.maintenance_chance) == (15_000, 50_000)
        seen = kill_mid_message(broker, redis_url, "slow-redis", tmp_path)
        print(f"\nthe killed worker's message ran again {seen.seconds:.1f} s after the kill")
        # Not before the heartbeat timeout (so it was the requeue), and well before 60 s.
        assert 15.0 <= seen.seconds < 40.0
        assert seen.runs[1:] == [
            ["start", "m1", str(seen.second)],
            ["done", "m1", str(seen.second)],
        ]
        assert queue_depths(broker)["slow-redis"] == {"ready": 0, "delayed": 0, "dead": 0}
    finally:
        broker.close()
