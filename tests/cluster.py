"""A Redis Cluster of the tests' own: three primaries (``redis-server --cluster-enabled
yes``) on free loopback ports, joined with ``redis-cli --cluster create``, and redis-py
``RedisCluster`` clients for it.

See https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/ (creating a
cluster with redis-cli) and the cluster specification's hash tags,
https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from worker.redis_server import free_port, redis_executable


@dataclass
class ClusterProcess:
    """A running Redis Cluster we started; ``stop()`` shuts every node down."""

    ports: list[int]
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """A URL of one node: redis-py's ``RedisCluster.from_url`` finds the others."""
        return f"redis://{self.host}:{self.ports[0]}/0"

    def client(self, **kwargs: object) -> RedisCluster:
        """A new redis-py cluster client (it discovers the slot map from the nodes)."""
        nodes = [ClusterNode(self.host, port) for port in self.ports]
        return RedisCluster(startup_nodes=nodes, **kwargs)  # type: ignore[arg-type]

    def node_client(self, port: int) -> redis.Redis:
        """A plain client of one node (for INFO, MEMORY USAGE and per-node stats)."""
        return redis.Redis(host=self.host, port=port)

    def flush(self) -> None:
        """Empty every primary (the cluster is ours: we started it)."""
        for port in self.ports:
            node = self.node_client(port)
            node.flushall()
            node.close()

    def stop(self) -> None:
        for port in self.ports:
            with contextlib.suppress(redis.RedisError):
                self.node_client(port).shutdown(nosave=True)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def redis_cli() -> str:
    found = shutil.which("redis-cli") or str(Path(redis_executable()).with_name("redis-cli"))
    if not Path(found).exists():
        raise RuntimeError("redis-cli not found: apt-get install redis-tools (or redis-server)")
    return found


def _wait_ping(port: int, deadline: float, host: str = "127.0.0.1") -> None:
    client = redis.Redis(host=host, port=port, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def cluster_state_ok(ports: list[int], host: str = "127.0.0.1") -> bool:
    """True when every node reports ``cluster_state:ok`` and knows all of the others."""
    for port in ports:
        client = redis.Redis(host=host, port=port)
        try:
            info = client.cluster("INFO")
        finally:
            client.close()
        if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) < len(
            ports
        ):
            return False
    return True


def start_cluster(
    directory: Path,
    primaries: int = 3,
    *,
    appendonly: bool = False,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
) -> ClusterProcess:
    """Start ``primaries`` cluster-enabled redis-servers and join them into one cluster.

    ``host``: the address the nodes listen on and announce to clients and to each other
    (tests/scale/netns.py: a bridge address that network namespaces reach).

    Raises:
        RuntimeError: When a node does not start or the cluster does not reach ``ok``.
    """
    ports: list[int] = []
    while len(ports) < primaries:
        port = free_port()
        # The cluster bus listens on port + 10000: it must be free too.
        if port not in ports and port + 10000 < 65536:
            ports.append(port)
    cluster = ClusterProcess(ports=ports, directory=directory, host=host)
    deadline = time.monotonic() + timeout
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [
                redis_executable(),
                "--bind", host,
                "--protected-mode", "yes" if host == "127.0.0.1" else "no",
                "--cluster-announce-ip", host,
                "--port", str(port),
                "--dir", str(node_dir.resolve()),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "yes" if appendonly else "no",
                "--logfile", "redis.log",
            ]  # fmt: skip
            cluster.processes.append(
                subprocess.Popen(
                    args,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for port in ports:
            _wait_ping(port, deadline, host)
        if primaries < 3:
            _join_by_hand(ports, host)
        else:
            _create(ports, timeout, host)
        while not cluster_state_ok(ports, host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster on ports {ports} did not reach cluster_state:ok")
            time.sleep(0.1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _join_by_hand(ports: list[int], host: str) -> None:
    """Fewer than 3 primaries (redis-cli --cluster create refuses them): each node takes
    an equal slot range (CLUSTER ADDSLOTS) and meets the first (CLUSTER MEET)."""
    for i, port in enumerate(ports):
        node = redis.Redis(host=host, port=port)
        start = i * 16384 // len(ports)
        end = (i + 1) * 16384 // len(ports) - 1
        node.execute_command("CLUSTER", "ADDSLOTS", *range(start, end + 1))
        if i:
            node.execute_command("CLUSTER", "MEET", host, ports[0])
        node.close()


def _create(ports: list[int], timeout: float, host: str) -> None:
    """Three or more primaries: ``redis-cli --cluster create``, as an operator would."""
    created = subprocess.run(
        [
            redis_cli(), "--cluster", "create",
            *(f"{host}:{port}" for port in ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-800:]}")


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcess]:
    """A 3-primary Redis Cluster started for this test session."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_server: ClusterProcess) -> ClusterProcess:
    """The session's Redis Cluster, emptied before each test."""
    redis_cluster_server.flush()
    return redis_cluster_server
