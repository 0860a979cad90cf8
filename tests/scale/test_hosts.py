"""Workers on three hosts, one host dies mid-run: every touch is sent exactly once,
except the ones in flight on the dead host, which the ledger records as outcome-unknown
(and ``nurture status`` and the dead letters report), never resent, never dropped.

The hosts (tests/scale/netns.py) are network namespaces joined to a bridge where this is
root with ``ip`` (test ids ``netns-…``), else plain processes on loopback (``loopback-…``,
where a kill closes the sockets and peers notice at once; ``NURTURE_TEST_HOSTS=loopback``
chooses that form anyway). Each host runs a real
``nurture worker`` (``ip netns exec``; settings by environment) against the test's own
services on the bridge address: a Redis (or a 3-primary Redis Cluster whose nodes
announce that address), the SendGrid stand-in, and RabbitMQ.

RabbitMQ: the machine's node listens on 127.0.0.1:5672 only, so each host reaches it
through a TCP forwarder of its own on the bridge address (tests/tcp_proxy.py) rather than
a node of the test's own: the session's vhost and queue fixtures (tests/rabbitmq.py) are
reused, no Erlang node has to start per test, the ``guest`` user keeps working (RabbitMQ
lets it in from loopback only), and the forwarder passes bytes both ways and never closes
a host's connection on its own, so RabbitMQ learns of the host's death the way it would
without it: by the AMQP heartbeat.

How long that takes. Our broker (worker/broker.py) builds dramatiq's ``RabbitmqBroker``
from the URL alone, and dramatiq hands the URL to ``pika.URLParameters``, whose
``heartbeat`` is "Desired connection heartbeat timeout for negotiation. If not present
the broker's value is accepted" (pika 1.3, pika/connection.py, URLParameters;
https://pika.readthedocs.io/en/stable/modules/parameters.html). RabbitMQ proposes 60 s:
"The value is in seconds, and default value suggested by RabbitMQ is 60" and "After two
missed heartbeats, the peer is considered to be unreachable"
(https://www.rabbitmq.com/docs/heartbeats). The server checks for incoming bytes once per
timeout, not per half: "we check for incoming data every interval, and time out after two
checks with no change. As a result we will time out between 2 and 3 intervals after the
last data has been received" (rabbitmq-server, deps/rabbit_common/src/rabbit_heartbeat.erl,
start_heartbeat_receiver). With the default that is 120-180 s after a host's last frame
(178 s measured here with the link down), and only then does RabbitMQ requeue what the
dead host's consumers held unacknowledged. So the worker asks for 10 s when the URL names
no heartbeat (``worker.broker.AMQP_HEARTBEAT_SECONDS``, put on the URL as ``?heartbeat=10``:
the client's value wins the negotiation); the hosts here use that default, the test waits
20-30 s, and it checks that RabbitMQ agreed to 10 s. The survivors do not
wait for the redelivery (the schedule's claim leases run out after ``NURTURE_CLAIM_LEASE``
and the touches are queued again), but the test does: it audits only after RabbitMQ has
dropped the dead host's connections and the survivors have handled the redelivered
messages, so a second send caused by a redelivery would be counted.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.chaos.procs import (
    Procs,
    all_finished,
    audit,
    chaos_event,
    emit,
    expected_touches,
    install_chaos_sequence,
    lead_ids,
    ledger_states,
    report,
    wait_until,
    wait_until_mid_sends,
    worker_env,
)
from tests.cluster import ClusterProcess, start_cluster
from tests.rabbitmq import APP_QUEUES, AmqpTarget, RabbitNode
from tests.scale.netns import Network, netns_available
from tests.sendgrid_standin import SendGridStandIn
from tests.tcp_proxy import TcpProxy
from worker.broker import AMQP_HEARTBEAT_SECONDS
from worker.redis_server import RedisProcess, start_redis
from worker.runtime import Tuning, state_client

#: ``NURTURE_TEST_HOSTS=loopback`` runs the loopback form where namespaces could be made.
MODE = (
    "netns"
    if os.environ.get("NURTURE_TEST_HOSTS") != "loopback" and netns_available()
    else "loopback"
)
HOSTS = ("a", "b", "c")
VICTIM = "b"
THREADS = 4
LEADS = 250  # two touches each
#: The heartbeat timeout the hosts ask for (the worker's default): RabbitMQ finds a silent
#: peer dead 2-3 of these after its last frame (see the module docstring).
HEARTBEAT = AMQP_HEARTBEAT_SECONDS


@pytest.fixture
def network() -> Iterator[Network]:
    """Three hosts (namespaces on a bridge, or loopback), all removed afterwards."""
    net = Network.create(HOSTS, use_netns=MODE == "netns")
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def services(
    network: Network,
    tmp_path: Path,
    rabbitmq_node: RabbitNode,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, object]]:
    """The test's state store (a Redis, or a 3-primary cluster), the SendGrid stand-in
    and a RabbitMQ forwarder per host, all listening on the network's service address."""
    address = network.service_address
    cluster = bool(request.param)
    store: RedisProcess | ClusterProcess
    if cluster:
        store = start_cluster(tmp_path / "cluster", host=address)
    else:
        store = start_redis(tmp_path / "redis", appendonly=True, host=address)
    proxies = {h.name: TcpProxy(rabbitmq_node.port, listen_host=address) for h in network.hosts}
    standin = SendGridStandIn(host=address)
    try:
        standin.start()
        for proxy in proxies.values():
            proxy.restore()
        yield {"url": store.url, "cluster": cluster, "standin": standin, "proxies": proxies}
    finally:
        for host in network.hosts:  # the workers go before the services they use
            for proc in host.processes:
                proc.close()
        for proxy in proxies.values():
            proxy.cut()
        standin.stop()
        store.stop()


def rabbit_counts(node: RabbitNode, amqp: AmqpTarget) -> tuple[int, int] | None:
    """(ready, unacknowledged) messages over the app's queues and their delay queues, or
    None when ``rabbitmqctl`` cannot answer for this vhost."""
    if not amqp.own_vhost:
        return None
    listed = node.ctl(
        "list_queues", "-q", "-p", amqp.vhost, "name", "messages_ready",
        "messages_unacknowledged", check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        return None
    ready = unacked = 0
    wanted = {*APP_QUEUES, *(f"{q}.DQ" for q in APP_QUEUES)}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in wanted and parts[1].isdigit():
            ready, unacked = ready + int(parts[1]), unacked + int(parts[2])
    return ready, unacked


def queues_empty(node: RabbitNode, amqp: AmqpTarget) -> bool:
    """Nothing ready or unacknowledged in the app's queues (``rabbitmqctl``), else nothing
    ready (a passive declare's message count)."""
    counts = rabbit_counts(node, amqp)
    if counts is not None:
        return counts == (0, 0)
    connection = pika.BlockingConnection(pika.URLParameters(amqp.url))
    try:
        channel = connection.channel()
        names = [*APP_QUEUES, *(f"{q}.DQ" for q in APP_QUEUES)]
        return all(channel.queue_declare(n, passive=True).method.message_count == 0 for n in names)
    finally:
        connection.close()


def heartbeat_seconds(node: RabbitNode, amqp: AmqpTarget) -> set[int] | None:
    """The heartbeat timeouts RabbitMQ negotiated with the connections in the test's
    vhost (``rabbitmqctl list_connections``); None when it cannot tell."""
    if not amqp.own_vhost:
        return None
    listed = node.ctl("list_connections", "-q", "vhost", "timeout", check=False)
    return {
        int(parts[1])
        for parts in (line.split() for line in listed.stdout.splitlines())
        if len(parts) == 2 and parts[0] == amqp.vhost and parts[1].isdigit()
    }


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.parametrize(
    "services",
    [
        pytest.param(False, id=f"{MODE}-rabbitmq-redis"),
        pytest.param(True, id=f"{MODE}-rabbitmq-redis-cluster"),
    ],
    indirect=True,
)
def test_a_host_dies_mid_run_and_the_others_send_each_touch_exactly_once(
    network: Network,
    services: dict[str, object],
    app_queues: AmqpTarget,
    rabbitmq_node: RabbitNode,
    catalog_dirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    install_chaos_sequence(catalog_dirs)
    redis_url, cluster = str(services["url"]), bool(services["cluster"])
    standin = services["standin"]
    proxies = services["proxies"]
    assert isinstance(standin, SendGridStandIn) and isinstance(proxies, dict)
    leads = lead_ids(LEADS)
    touches = len(expected_touches(leads))
    client = state_client(redis_url, cluster=cluster)
    # Every answer takes a few ms, like a real API: requests are in flight at the kill.
    standin.faults(rate=1.0, kinds=("slow",), slow_delay=0.1)
    procs = Procs(tmp_path)
    envs = {}
    for host in network.hosts:
        proxy = proxies[host.name]
        state_dir = tmp_path / f"host-{host.name}"
        state_dir.mkdir()
        proxied = app_queues.url.replace(
            f"127.0.0.1:{rabbitmq_node.port}/", f"{network.service_address}:{proxy.port}/"
        )
        extra = {"NURTURE_BROKER_URL": proxied}
        if cluster:
            extra["NURTURE_REDIS_CLUSTER"] = "1"
        envs[host.name] = worker_env(
            redis_url=redis_url,
            catalog_dirs=catalog_dirs,
            state_dir=state_dir,
            standin=standin,
            **extra,
        )
    assert emit(
        redis_url, [chaos_event(lead) for lead in leads], tmp_path, app_queues.url, cluster=cluster
    ) == len(leads)
    started = time.monotonic()
    for host in network.hosts:
        proc = procs.worker(envs[host.name], THREADS, f"worker-{host.name}", host.prefix)
        host.processes.append(proc)
    wait_until_mid_sends(client, standin, leads, procs, 0.4)

    victim = next(h for h in network.hosts if h.name == VICTIM)
    dead_proxy = proxies[VICTIM]
    killed_at = time.monotonic()
    killed_pids = network.kill(victim)
    closed = watch_closed(dead_proxy)
    received_at_kill = standin.accepted
    sending_at_kill = {k for k, state in ledger_states(client, leads).items() if state == "sending"}

    # The survivors finish every enrollment: the dead host's claims run out of lease and
    # are queued again; the touches it was sending are found half-done: outcome unknown.
    wait_until(
        lambda: all_finished(client, leads),
        120,
        interval=0.2,
        what=f"every enrollment finished\n{procs.logs()}",
    )
    finished_after = time.monotonic() - killed_at
    held = rabbit_counts(rabbitmq_node, app_queues)  # unacked, e.g. by dead consumers
    negotiated = heartbeat_seconds(rabbitmq_node, app_queues)
    # RabbitMQ drops the dead host's connections (missed heartbeats) and requeues what its
    # consumers held; the survivors get those messages and find the touches done.
    wait_until(
        lambda: closed[0] is not None,
        3 * HEARTBEAT + 30,
        interval=0.5,
        what=f"RabbitMQ to close the dead host's {dead_proxy.open_upstream} connections",
    )
    assert closed[0] is not None
    broker_closed_after = closed[0] - killed_at
    wait_until(
        lambda: queues_empty(rabbitmq_node, app_queues) and all_finished(client, leads),
        60,
        interval=0.5,
        what=f"the redelivered messages handled\n{procs.logs()}",
    )
    settle_stable(standin)
    drained_after = time.monotonic() - killed_at

    result = audit(client, standin, leads)
    status = procs.run(["status", "--json"], envs["a"])
    for host in network.hosts:
        for proc in host.processes:
            proc.terminate()
    exit_codes = {h.name: [p.wait(60) for p in h.processes] for h in network.hosts}
    report(
        f"hosts-{MODE}",
        state="redis-cluster" if cluster else "redis",
        touches=touches,
        received_at_kill=received_at_kill,
        killed_pids=len(killed_pids),
        sending_at_kill=len(sending_at_kill),
        # The dead host's sends in flight are the unknown ones; SendGrid got these of them:
        unknown_received=sum(result.received[k] for k in result.unknown),
        unacked_when_finished=None if held is None else held[1],
        heartbeat_s=sorted(negotiated or []),
        finished_s_after_kill=round(finished_after, 1),
        broker_closed_s_after_kill=round(broker_closed_after, 1),
        drained_s_after_kill=round(drained_after, 1),
        seconds=round(time.monotonic() - started, 1),
        **result.summary(),
    )
    assert killed_pids, f"no process found on host {VICTIM}"
    assert result.lost == [], str(result)
    assert result.duplicated == [], str(result)
    assert result.inconsistent == [] and result.unexpected == [], str(result)
    assert len(result.sent_once) + len(result.unknown) == touches, str(result)
    # Outcome-unknown only for what was in flight at the kill, at most what the dead
    # host's threads could hold (each thread sends a queue message's touches together).
    assert set(result.unknown) <= sending_at_kill, str(result)
    assert len(result.unknown) <= THREADS * Tuning().touches_per_message, str(result)
    # ... and reported: each in the dead letters with its reason, and in nurture status.
    for key in result.unknown:
        assert any("outcome unknown" in r for r in result.dead_reasons.get(key, [])), key
    assert status.returncode == 0, status.stderr.decode()
    shown = json.loads(status.stdout)
    assert shown["unknown_count"] == len(result.unknown), shown
    assert len(shown["unknown"]) == min(len(result.unknown), 20), shown
    # pika asked for our heartbeat and RabbitMQ agreed to it.
    assert negotiated is None or negotiated == {HEARTBEAT}, negotiated
    if network.mode == "netns":
        # The link went down before the kill: no FIN reached RabbitMQ, which found the
        # host dead only by the missing heartbeats (2-3 timeouts after its last frame).
        assert broker_closed_after >= HEARTBEAT, broker_closed_after
    survivors = {name: codes for name, codes in exit_codes.items() if name != VICTIM}
    assert all(codes == [0] for codes in survivors.values()), procs.logs()
    client.close()


def watch_closed(proxy: TcpProxy) -> list[float | None]:
    """A one-item list that a watcher thread sets to the monotonic time at which the
    proxy's target (RabbitMQ) has closed every connection it forwarded."""
    found: list[float | None] = [None]

    def watch() -> None:
        deadline = time.monotonic() + 3 * HEARTBEAT + 60
        while time.monotonic() < deadline:
            if proxy.open_upstream == 0:
                found[0] = time.monotonic()
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return found


def settle_stable(standin: SendGridStandIn, quiet: float = 2.0, limit: float = 30.0) -> None:
    """Wait until the stand-in has accepted nothing new for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    last, since = standin.accepted, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if standin.accepted != last:
            last, since = standin.accepted, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
