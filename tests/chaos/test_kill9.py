"""`kill -9` of a `nurture worker` in the middle of the sends, then a restart: every
touch is delivered exactly once, except the sends that were in flight at the kill,
which are recorded as outcome-unknown (never resent, never silently dropped).

Run three times: queues on the state Redis (the default); queues on RabbitMQ
(``NURTURE_BROKER_URL``), where the killed worker's unacked messages go back to the
queue as soon as RabbitMQ sees its connection drop; and RabbitMQ with the state on a
3-primary Redis Cluster (tests/cluster.py, ``NURTURE_REDIS_CLUSTER``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.procs import (
    Procs,
    all_finished,
    audit,
    chaos_event,
    emit,
    expected_touches,
    in_flight,
    lead_ids,
    report,
    wait_until,
    wait_until_mid_sends,
    worker_env,
)
from tests.cluster import ClusterProcess
from tests.rabbitmq import AmqpTarget
from tests.sendgrid_standin import SendGridStandIn
from worker.runtime import Tuning, state_client

THREADS = 4


@pytest.mark.chaos
def test_kill_9_mid_sends_then_restart_sends_each_touch_exactly_once(
    redis_url: str,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    kill_mid_sends(redis_url, None, chaos_catalog, standin, procs, tmp_path, full_size)


@pytest.mark.chaos
def test_kill_9_with_queues_on_rabbitmq_sends_each_touch_exactly_once(
    redis_url: str,
    app_queues: AmqpTarget,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    kill_mid_sends(redis_url, app_queues.url, chaos_catalog, standin, procs, tmp_path, full_size)


@pytest.mark.chaos
def test_kill_9_with_rabbitmq_and_a_redis_cluster_sends_each_touch_exactly_once(
    redis_cluster: ClusterProcess,
    app_queues: AmqpTarget,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    """The scale-out topology: queues on RabbitMQ, state on a 3-primary Redis Cluster
    (``NURTURE_REDIS_CLUSTER``), workers as separate processes, one killed mid-run."""
    kill_mid_sends(
        redis_cluster.url,
        app_queues.url,
        chaos_catalog,
        standin,
        procs,
        tmp_path,
        full_size,
        name="kill9-cluster",
        cluster=True,
    )


def kill_mid_sends(
    redis_url: str,
    broker_url: str | None,
    catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
    name: str = "kill9",
    cluster: bool = False,
) -> None:
    """Start a worker, kill -9 it at 40 % of the sends, restart it with a second one
    alongside, and audit every touch."""
    leads = lead_ids(2500 if full_size else 200)  # two touches per lead
    touches = len(expected_touches(leads))
    client = state_client(redis_url, cluster=cluster)
    # Every answer takes a few ms, like a real API: requests are in flight at the kill.
    standin.faults(rate=1.0, kinds=("slow",), slow_delay=0.02)
    extra = {"NURTURE_BROKER_URL": broker_url} if broker_url else {}
    if cluster:
        extra["NURTURE_REDIS_CLUSTER"] = "1"
    env = worker_env(
        redis_url=redis_url, catalog_dirs=catalog, state_dir=tmp_path, standin=standin, **extra
    )
    events = [chaos_event(lead) for lead in leads]
    assert emit(redis_url, events, tmp_path, broker_url, cluster=cluster) == len(leads)
    started = time.monotonic()
    victim = procs.worker(env, THREADS, name="victim")
    wait_until_mid_sends(client, standin, leads, procs, 0.4)
    victim.kill()
    received_at_kill = standin.accepted
    sending_at_kill = in_flight(client, leads)  # reserved by the dead worker, no outcome

    # Restart, with a second worker alongside (two schedulers, two sets of threads).
    procs.worker(env, THREADS, name="restarted")
    procs.worker(env, THREADS, name="second")
    wait_until(
        lambda: all_finished(client, leads),
        300 if full_size else 120,
        interval=0.2,
        what=f"every enrollment finished\n{procs.logs()}",
    )
    elapsed = time.monotonic() - started
    result = audit(client, standin, leads)
    for proc in procs.started[1:]:
        proc.terminate()
    exit_codes = [proc.wait(30) for proc in procs.started[1:]]

    report(
        name,
        broker="rabbitmq" if broker_url else "redis",
        state="redis-cluster" if cluster else "redis",
        touches=touches,
        received_at_kill=received_at_kill,
        in_flight_at_kill=sending_at_kill,
        seconds=round(elapsed, 1),
        **result.summary(),
    )
    assert result.lost == [], str(result)
    assert result.duplicated == [], str(result)
    assert result.inconsistent == [] and result.unexpected == [], str(result)
    # Each thread delivers its queue message's touches together (send_many), so a killed
    # worker can leave up to threads x touches per message without an outcome.
    assert sending_at_kill <= THREADS * Tuning().touches_per_message
    assert len(result.unknown) <= sending_at_kill, str(result)
    assert len(result.sent_once) + len(result.unknown) == touches, str(result)
    assert exit_codes == [0, 0], procs.logs()
