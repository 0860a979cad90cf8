"""RabbitMQ for the tests: the one answering on 127.0.0.1:5672 (the machine's service,
or the one ``.ci/run`` starts), else a node of Debian's ``rabbitmq-server`` that the
fixture starts on free ports and stops again.

The test session gets a vhost of its own (``rabbitmqctl add_vhost``), deleted afterwards,
and each test queue names of its own, which it deletes: tests never see or delete
anything they did not make. Where ``rabbitmqctl`` cannot reach the node, the tests use
the default vhost, still with queue names of their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from worker.redis_server import free_port

DEFAULT_PORT = 5672
#: Debian installs the real scripts here; /usr/sbin/rabbitmq-server switches user first.
DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@dataclass
class RabbitNode:
    """A RabbitMQ node the tests use; ``process`` is set when the fixture started it."""

    port: int
    nodename: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    ctl_path: str = "rabbitmqctl"

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl`` against this node."""
        node = ["-n", self.nodename] if self.nodename else []
        return subprocess.run(
            [self.ctl_path, *node, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            env={**os.environ, **self.env},
        )

    def url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.ctl("stop", check=False)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_rabbitmq(directory: Path, timeout: float = 90.0) -> RabbitNode:
    """Start a throwaway ``rabbitmq-server`` node with its files in ``directory``.

    Raises:
        RuntimeError: When Debian's rabbitmq-server is missing or does not start in time.
    """
    server = DEBIAN_BIN / "rabbitmq-server"
    if not server.exists():
        found = shutil.which("rabbitmq-server")
        if not found:
            raise RuntimeError(
                "no RabbitMQ on 127.0.0.1:5672 and no rabbitmq-server to start: "
                "apt-get install rabbitmq-server (what .ci/run does)"
            )
        server = Path(found)
    ctl = server.with_name("rabbitmqctl")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "enabled_plugins").write_text("[].\n")
    (directory / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    (directory / "rabbitmq-env.conf").write_text("")
    nodename = f"nurture-test-{port}@localhost"
    env = {
        "HOME": str(directory),  # the node's Erlang cookie lives here
        "RABBITMQ_NODENAME": nodename,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    log = (directory / "server.out").open("wb")
    process = subprocess.Popen(
        [str(server)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    node = RabbitNode(port=port, nodename=nodename, env=env, process=process, ctl_path=str(ctl))
    deadline = time.monotonic() + timeout
    while not answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            node.stop()
            tail = (directory / "server.out").read_text(errors="replace")[-800:]
            raise RuntimeError(f"rabbitmq-server did not start on port {port}: {tail}")
        time.sleep(0.5)
    node.ctl("await_startup")
    return node


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """The RabbitMQ on 127.0.0.1:5672, else one started for this session."""
    if answers(DEFAULT_PORT):
        yield RabbitNode(port=DEFAULT_PORT)
        return
    node = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    yield node
    node.stop()


@dataclass
class AmqpTarget:
    """Where one test talks to RabbitMQ: its URL and the suffix for its queue names."""

    url: str
    own_vhost: bool
    suffix: str
    vhost: str = "/"
    queues: list[str] = field(default_factory=list)

    def queue(self, name: str) -> str:
        """A queue name of this test's own (remembered, to delete it afterwards)."""
        full = f"{name}-{self.suffix}"
        self.queues.append(full)
        return full

    def delete_queues(self, *names: str) -> None:
        """Delete queues this test declared (with their .DQ and .XQ companions)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            for name in names:
                for full in (name, f"{name}.DQ", f"{name}.XQ"):
                    channel = connection.channel()
                    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                        channel.queue_delete(full)
                    if channel.is_open:
                        channel.close()
        finally:
            connection.close()


@pytest.fixture(scope="session")
def amqp_vhost(rabbitmq_node: RabbitNode) -> Iterator[str | None]:
    """A vhost of this test session's own, deleted afterwards; None when ``rabbitmqctl``
    cannot make one (the tests then share the default vhost, with queues of their own)."""
    vhost = f"nurture-test-{uuid.uuid4().hex[:10]}"
    if rabbitmq_node.ctl("add_vhost", vhost, check=False).returncode != 0:
        yield None
        return
    rabbitmq_node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield vhost
    rabbitmq_node.ctl("delete_vhost", vhost, check=False)


@pytest.fixture
def amqp(rabbitmq_node: RabbitNode, amqp_vhost: str | None) -> Iterator[AmqpTarget]:
    """Where one test talks to RabbitMQ: the session's vhost and queue names of the test's
    own, deleted (with their delay and dead-letter queues) afterwards."""
    target = AmqpTarget(
        url=rabbitmq_node.url(amqp_vhost or "/"),
        own_vhost=amqp_vhost is not None,
        suffix=uuid.uuid4().hex[:10],
        vhost=amqp_vhost or "/",
    )
    yield target
    target.delete_queues(*target.queues)


#: The queues a whole worker declares (worker/actors.py), with dramatiq's companions.
APP_QUEUES = ("events", "touches")


@pytest.fixture
def app_queues(amqp: AmqpTarget) -> Iterator[AmqpTarget]:
    """RabbitMQ for a whole worker (in-process or ``nurture worker`` subprocesses): the
    worker's own queue names in the session's vhost, deleted before the test (nothing
    left by an earlier one) and after it."""
    amqp.delete_queues(*APP_QUEUES)
    amqp.queues.extend(APP_QUEUES)
    yield amqp
