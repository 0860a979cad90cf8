"""The worker with its queues on RabbitMQ (``NURTURE_BROKER_URL=amqp://…``): the core
flow end to end with real dramatiq workers (state on a single Redis, and on a 3-primary
Redis Cluster with ``NURTURE_REDIS_CLUSTER``), status and metrics reading RabbitMQ's queue
depths, and the settings refusing what is not a broker URL without showing a password.

RabbitMQ's queue counts come from a passive ``queue.declare`` (its ``message_count``):
https://www.rabbitmq.com/docs/queues#declaration and
https://www.rabbitmq.com/amqp-0-9-1-reference#queue.declare.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from prometheus_client import generate_latest

from tests.chaos.procs import nurture_command
from tests.cluster import ClusterProcess
from tests.harness import Harness, event, running
from tests.rabbitmq import AmqpTarget, RabbitNode
from tests.tcp_proxy import TcpProxy
from worker.errors import BrokerUnavailableError, SettingsError
from worker.http.metrics import HttpMetrics
from worker.redis_server import free_port
from worker.settings import load_settings
from worker.status import collect_status
from worker.worker_process import wait_for_broker

INBOUND = {
    "first_name": "Ann",
    "company": "Berg ApS",
    "source": "website",
    "timezone": "Europe/Copenhagen",
    "attributes": {"industry": "saas", "problem": "churn", "budget": 5000},
}
VALUE_FIRST = ["outcome-story", "case-study", "testimonial", "how-to-guide"]


@pytest.fixture(params=["redis", "redis-cluster"])
def state_store(request: pytest.FixtureRequest) -> dict[str, object]:
    """Where the state lives: the test's single Redis, or the 3-primary test cluster."""
    if request.param == "redis":
        return {}
    cluster: ClusterProcess = request.getfixturevalue("redis_cluster")
    return {"redis_url": cluster.url, "redis_cluster": True}


def test_events_to_emails_exactly_once_with_queues_on_rabbitmq(
    make_harness: Callable[..., Harness], app_queues: AmqpTarget, state_store: dict[str, object]
) -> None:
    h = make_harness(broker_url=app_queues.url, **state_store)
    assert isinstance(h.rt.broker, RabbitmqBroker)
    with running(h):
        assert h.emit(event("e1", **INBOUND)).accepted == 1
        assert h.emit(event("e1", **INBOUND)).duplicates == 1  # the replay guard is in Redis
        h.settle()
        scheduled = h.rt.store.scheduled_for("lead-1")
        assert len(scheduled) == 1
        assert scheduled[0][1] == pytest.approx(h.clock.now().timestamp() + 600)
        h.advance(timedelta(minutes=10))
        assert [step for (_lead, _seq, step) in h.sent()] == ["outcome-story"]
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    # Each step exactly once, in order, and the enrollment done.
    assert [step for (_lead, _seq, step) in h.sent()] == VALUE_FIRST
    enrollment = h.rt.store.enrollment("lead-1", "value-first")
    assert enrollment is not None and enrollment.state == "done"
    assert h.rt.store.stats()["value-first"]["outcome-story"]["sent"] == 1
    status = collect_status(h.rt)
    assert status["queues"]["events"] == {"ready": 0, "delayed": 0, "failed": 0}
    assert status["broker"].startswith("NURTURE_BROKER_URL amqp://guest:***@127.0.0.1")


def test_status_and_metrics_read_the_depths_from_rabbitmq(
    make_harness: Callable[..., Harness], app_queues: AmqpTarget
) -> None:
    h = make_harness(broker_url=app_queues.url)  # no worker runs: the events wait
    h.emit(event("e1"), event("e2", lead_id="lead-2"))
    queues = collect_status(h.rt)["queues"]
    assert queues["events"] == {"ready": 1, "delayed": 0, "failed": 0}  # one message, 2 events
    assert queues["touches"] == {"ready": 0, "delayed": 0, "failed": 0}
    text = generate_latest(HttpMetrics(h.rt).registry).decode()
    assert "nurture_broker_up 1.0" in text
    assert 'nurture_queue_messages{queue="events",state="ready"} 1.0' in text


def test_a_broker_that_does_not_answer_is_named_with_its_password_masked(
    make_harness: Callable[..., Harness],
) -> None:
    url = f"amqp://nurture:s3cret@127.0.0.1:{free_port()}/nurture"
    h = make_harness(broker_url=url)
    with pytest.raises(BrokerUnavailableError) as caught:
        collect_status(h.rt)
    message = str(caught.value)
    assert "NURTURE_BROKER_URL amqp://nurture:***@127.0.0.1" in message
    assert "s3cret" not in message
    text = generate_latest(HttpMetrics(h.rt).registry).decode()
    assert "nurture_broker_up 0.0" in text
    assert "nurture_redis_up 1.0" in text  # the state Redis is fine
    with pytest.raises(BrokerUnavailableError, match="NURTURE_BROKER_URL") as refused:
        h.emit(event("e1"))
    assert "s3cret" not in str(refused.value)
    # Nothing half-accepted: the id is forgotten, so the sender's retry will be queued.
    assert h.rt.store.events.mark_seen(["e1"]) == [True]
    # A worker waits for the broker at start-up, then gives up naming it.
    with pytest.raises(BrokerUnavailableError, match="NURTURE_BROKER_URL"):
        wait_for_broker(h.rt, threading.Event(), limit=1.5)


def test_a_url_that_is_no_broker_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, broker_url="http://user:hunter2@mq.example:5672/")
    message = str(caught.value)
    assert message.startswith("NURTURE_BROKER_URL: ")
    assert "amqp://" in message and "hunter2" not in message
    assert load_settings(_env_file=None, broker_url=" ").broker_url is None


@pytest.mark.slow
def test_nurture_status_names_the_broker_that_does_not_answer(
    redis_url: str, tmp_path: Path
) -> None:
    """One line naming the setting, the password masked, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(
        NURTURE_REDIS_URL=redis_url,
        NURTURE_STATE_DIR=str(tmp_path),
        NURTURE_BROKER_URL=f"amqp://nurture:s3cret@127.0.0.1:{free_port()}/nurture",
    )
    result = subprocess.run(
        [*nurture_command(), "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "NURTURE_BROKER_URL amqp://nurture:***@127.0.0.1" in lines[0]
    assert "s3cret" not in result.stderr + result.stdout


def test_sending_resumes_after_rabbitmq_was_away(
    make_harness: Callable[..., Harness], app_queues: AmqpTarget, rabbitmq_node: RabbitNode
) -> None:
    """RabbitMQ cut off mid-run (every connection dropped): the scheduler keeps ticking,
    its claims stay leased, and once RabbitMQ is back the touch goes out, once."""
    with TcpProxy(rabbitmq_node.port) as proxy:
        url = app_queues.url.replace(f":{rabbitmq_node.port}/", f":{proxy.port}/")
        h = make_harness(broker_url=url, claim_lease=5.0)
        with running(h):
            h.emit(event("e1", **INBOUND))
            h.settle()
            assert len(h.rt.store.scheduled_for("lead-1")) == 1
            proxy.cut()
            h.clock.advance(timedelta(minutes=10))  # the first touch is due
            scheduler = h.rt.scheduler()
            scheduler.start()
            try:
                time.sleep(2.5)  # several ticks, each failing to queue the touch
                assert scheduler._thread is not None and scheduler._thread.is_alive()
                assert h.sent() == []
                proxy.restore()
                h.clock.advance(timedelta(seconds=6))  # the failed claim's lease is over
                deadline = time.monotonic() + 60
                while not h.sent() and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # a second send, were there one, would be out by now
            finally:
                scheduler.stop()
    assert [step for (_lead, _seq, step) in h.sent()] == ["outcome-story"]
    assert h.rt.store.stats()["value-first"]["outcome-story"]["sent"] == 1
