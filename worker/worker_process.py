"""``nurture worker``: dramatiq workers, the scheduler and live reload in one process,
or a supervisor of several such processes (``--processes N``, default one per CPU).

Several processes share the work safely: each runs its own scheduler, and claiming due
touches is one atomic Lua step whose claim is a lease (``lua/claim_due.lua``), so a
touch is claimed by exactly one of them and a process that dies loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

import dramatiq

from worker.errors import BrokerUnavailableError
from worker.redis_server import embedded_redis_url
from worker.runtime import Runtime
from worker.settings import Settings

log = logging.getLogger(__name__)

RELOAD_INTERVAL = 2.0
#: Set in each child's environment to the supervisor's pid.
SUPERVISOR_ENV = "NURTURE_WORKER_SUPERVISOR"
#: Seconds a child gets to finish its in-flight work after SIGTERM (dramatiq's own stop
#: waits up to 60 s) before it is killed.
CHILD_STOP_TIMEOUT = 90.0
#: A child that exits is started again after this pause...
RESTART_DELAY = 1.0
#: ...unless children exited this many times within CRASH_WINDOW seconds: then
#: something is wrong with the set-up (the errors above say what) and all stop.
MAX_RESTARTS = 5
CRASH_WINDOW = 60.0


def wait_for_redis(runtime: Runtime, stop: threading.Event, limit: float = 60.0) -> None:
    """Wait for Redis at start-up (e.g. started together by docker compose), then give up
    with an error naming the URL."""
    deadline = time.monotonic() + limit
    while not runtime.store.ping():
        if time.monotonic() > deadline or stop.is_set():
            runtime.check_redis()  # raises StoreUnavailableError naming the URL
        log.warning("waiting for Redis at %s", runtime.redis_url)
        stop.wait(1.0)


def wait_for_broker(runtime: Runtime, stop: threading.Event, limit: float = 60.0) -> None:
    """Wait for the message broker (RabbitMQ may start after the workers), then give up
    with an error naming ``NURTURE_BROKER_URL``."""
    deadline = time.monotonic() + limit
    while True:
        try:
            runtime.broker_depths()
            return
        except BrokerUnavailableError:
            if time.monotonic() > deadline or stop.is_set():
                raise
            log.warning("waiting for the message broker (%s)", runtime.broker_name)
        stop.wait(1.0)


def run_worker(
    runtime: Runtime,
    stop: threading.Event,
    *,
    threads: int | None = None,
    schedule: bool = True,
) -> None:
    """Run until ``stop`` is set, then shut down without losing work.

    On stop: the scheduler stops claiming; dramatiq finishes the messages in flight
    and puts prefetched ones back on the queue; claims not yet sent return to the
    schedule when their lease runs out.
    """
    wait_for_redis(runtime, stop)
    runtime.check_redis()  # a key layout this version does not run on: refuse
    wait_for_broker(runtime, stop)
    worker = dramatiq.Worker(
        runtime.broker,
        worker_threads=threads or runtime.settings.worker_threads,
        worker_timeout=200,
    )
    worker.start()
    scheduler = runtime.scheduler()
    if schedule:
        scheduler.start()
    log.info(
        "worker running: %d threads, sequences %s, delivery %s",
        threads or runtime.settings.worker_threads,
        runtime.catalog.current.catalog.version,
        runtime.settings.delivery,
    )
    try:
        while not stop.wait(RELOAD_INTERVAL):
            try:
                runtime.catalog.reload_if_changed()
            except Exception:
                log.exception("live reload failed; the last good sequences keep running")
    finally:
        log.info("stopping: finishing in-flight work")
        scheduler.stop()
        worker.stop(timeout=60_000)
        runtime.close()
        log.info("stopped")


def default_processes() -> int:
    """One worker process per CPU this process may run on (as dramatiq's own CLI starts
    one per CPU); the affinity mask, not the host's count, so a container pinned to two
    CPUs starts two."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def watch_supervisor(stop: threading.Event) -> None:
    """In a child of :func:`supervise`: stop (finishing in-flight work) when the
    supervisor is gone, e.g. killed with SIGKILL, instead of running on unsupervised."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != int(supervisor):
                log.warning("the supervising nurture worker (pid %s) is gone; stopping", supervisor)
                stop.set()

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Children:
    """The worker processes of one supervisor, each in a numbered slot."""

    def __init__(self, count: int, threads: int | None, env: dict[str, str]) -> None:
        self.command = [sys.executable, "-m", "worker.cli", "worker", "--processes", "1"]
        if threads:
            self.command += ["--threads", str(threads)]
        self.env = env
        self.slots: list[subprocess.Popen[bytes]] = [self.start(i) for i in range(count)]

    def start(self, slot: int) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(self.command, env=self.env)  # logs go to our stdout/stderr
        log.info("worker process %d started (pid %d)", slot + 1, child.pid)
        return child

    def stop(self) -> None:
        """SIGTERM every child, wait for them to finish, kill the ones that do not."""
        for child in self.slots:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT
        for slot, child in enumerate(self.slots):
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "worker process %d (pid %d) did not stop within %.0f s; killing it "
                    "(its claimed touches return to the schedule when their lease ends)",
                    slot + 1,
                    child.pid,
                    CHILD_STOP_TIMEOUT,
                )
                child.kill()
                child.wait()


def supervise(
    settings: Settings, processes: int, threads: int | None, stop: threading.Event
) -> int:
    """Run ``processes`` worker processes until ``stop`` is set; restart any that exits.

    Each child is ``nurture worker --processes 1`` with this environment. SIGTERM/SIGINT
    (which set ``stop``) are passed on as SIGTERM, and every child finishes its
    in-flight work before this returns.

    Args:
        settings: The loaded settings (the embedded Redis is started here once, so
            the children do not race to start it).
        processes: How many worker processes.
        threads: Worker threads per process (None: ``NURTURE_WORKER_THREADS``).
        stop: Set by the signal handlers.

    Returns:
        0 after a requested stop; 1 when children kept exiting (a crash loop).
    """
    env = dict(os.environ)
    env[SUPERVISOR_ENV] = str(os.getpid())
    if not settings.redis_url:
        env["NURTURE_REDIS_URL"] = embedded_redis_url(settings.state_dir)
    children = _Children(processes, threads, env)
    log.info("supervising %d worker processes", processes)
    exits: deque[float] = deque(maxlen=MAX_RESTARTS)
    failed = False
    try:
        while not stop.wait(0.5):
            for slot, child in enumerate(children.slots):
                code = child.poll()
                if code is None or stop.is_set():
                    continue
                exits.append(time.monotonic())
                if len(exits) == MAX_RESTARTS and exits[-1] - exits[0] < CRASH_WINDOW:
                    log.error(
                        "worker process %d %s; worker processes exited %d times within %.0f s, "
                        "so nurture worker stops: fix the error logged above and start it again",
                        slot + 1,
                        _describe_exit(code),
                        MAX_RESTARTS,
                        CRASH_WINDOW,
                    )
                    failed = True
                    stop.set()
                    break
                log.error(
                    "worker process %d (pid %d) %s; starting it again",
                    slot + 1,
                    child.pid,
                    _describe_exit(code),
                )
                stop.wait(RESTART_DELAY)
                if not stop.is_set():
                    children.slots[slot] = children.start(slot)
    finally:
        log.info("stopping %d worker processes: finishing in-flight work", processes)
        children.stop()
    return 1 if failed else 0
