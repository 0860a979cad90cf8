"""What every benchmark shares: the Redis of the run, the SendGrid stand-in process,
the benchmark catalog, ``nurture`` subprocesses, and process measurements.

Nothing here talks to anything but 127.0.0.1, and every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from worker.redis_server import RedisProcess, free_port, start_redis
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "SG.bench-key"
WEBHOOK_SECRET = "bench-webhook-secret"
SEQUENCE_ID = "bench"
FIRST_STEP = "first"
SECOND_STEP = "second"
PREFIX = "nurture"  # the worker's default key prefix
DRAMATIQ_NAMESPACE = "dramatiq"

# The benchmark sequence: the first touch is due as soon as the lead arrives (wait 0s,
# no send window), the second a month later, so sending the first also exercises the
# "advance and schedule the next step" path. It renders the shipped value templates
# (content library included), so rendering costs what it costs in production.
BENCH_SEQUENCE = f"""\
id: {SEQUENCE_ID}
description: Benchmark sequence (first touch at once, no send window)
trigger:
  event: lead.created
exit_on: [lead.replied]
steps:
  - id: {FIRST_STEP}
    wait: 0s
    template: value/outcome_story
  - id: {SECOND_STEP}
    wait: 30d
    template: value/case_study
"""


def now() -> float:
    return time.time()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> float:
    """Poll until ``predicate()``; returns the time it became true.

    Raises:
        TimeoutError: Naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return now()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- processes -------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a live process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    ticks = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / ticks, (busy + idle + iowait) / ticks


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


class CpuWindow:
    """CPU used during a timed window: by our processes, and by everything else on the
    machine (other people's work on a shared box), in cores."""

    def __init__(self, bench: Bench, procs: Sequence[Proc]) -> None:
        self.bench = bench
        self.procs = list(procs)

    def __enter__(self) -> CpuWindow:
        self.wall = time.monotonic()
        self.machine = machine_cpu()[0]
        self.procs_cpu = sum(p.cpu() for p in self.procs)
        self.redis_cpu = self.bench.redis_cpu()
        self.standin_cpu = self.bench.standin.cpu()
        self.own = own_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.wall
        self.machine = machine_cpu()[0] - self.machine
        self.procs_cpu = sum(p.cpu() for p in self.procs) - self.procs_cpu
        self.redis_cpu = self.bench.redis_cpu() - self.redis_cpu
        self.standin_cpu = self.bench.standin.cpu() - self.standin_cpu
        self.own = own_cpu() - self.own

    def result(self, extra_cpu: float = 0.0) -> dict[str, float]:
        """Seconds of CPU per part; ``extra_cpu``: CPU of our processes measured apart
        (e.g. a child that already exited), counted as ours and as ``procs_cpu``."""
        procs = self.procs_cpu + extra_cpu
        ours = procs + self.redis_cpu + self.standin_cpu + self.own
        return {
            "procs_cpu": procs,
            "redis_cpu": self.redis_cpu,
            "standin_cpu": self.standin_cpu,
            "bench_cpu": self.own,
            "machine_busy_cores": self.machine / self.seconds,
            "foreign_cores": max(0.0, self.machine - ours) / self.seconds,
        }


def nurture_command() -> list[str]:
    """The ``nurture`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "nurture"
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker.cli"]


def py_spy_command() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@dataclass
class Proc:
    """A subprocess we started (and only ever stop by its own pid)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss(self) -> int:
        return proc_rss_bytes(self.pid)

    def tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM the measured process, wait, SIGKILL if it does not go."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


# -- the SendGrid stand-in -------------------------------------------------------------


class StandIn:
    """``python -m tests.sendgrid_standin`` in its own process, driven over HTTP."""

    def __init__(self, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.sendgrid_standin", "--port", "0", "--key", API_KEY],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=clean_env(),
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().decode().strip()
        if not line.isdigit():
            self.popen.kill()
            raise RuntimeError(f"the SendGrid stand-in did not start: {line!r}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_standin/stats")
        return result

    def accepted(self) -> int:
        return int(self.stats()["accepted"])

    def cpu(self) -> float:
        """CPU seconds of the whole stand-in process (its serving threads and the rest)."""
        return proc_cpu_seconds(self.popen.pid)

    def reset(self) -> None:
        self._call("POST", "/_standin/reset", {})

    def latency(self, median: float, p95: float | None = None, seed: int | None = None) -> None:
        """Delay every mail-send answer (see ``SendGridStandIn.latency``)."""
        self._call("POST", "/_standin/latency", {"median": median, "p95": p95, "seed": seed})

    def rate_limit(self, limit: int | None, period: float = 1.0) -> None:
        """SendGrid's X-RateLimit-* window (see ``SendGridStandIn.rate_limit``)."""
        self._call("POST", "/_standin/rate_limit", {"limit": limit, "period": period})

    def receipts(self, since: int = 0) -> list[tuple[str, float]]:
        """(lead_id, received_at) of every accepted message, in arrival order."""
        rows = self._call("GET", f"/_standin/receipts?since={since}", timeout=300)
        return [(str(lead), float(at)) for lead, at in rows]

    def record(self, messages: bool) -> None:
        """Keep whole messages (True) or only receipts (False: long benchmarks)."""
        self._call("POST", "/_standin/record", {"messages": messages})

    def messages(self, since: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", f"/_standin/messages?since={since}", timeout=300
        )
        return result

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


# -- the environment of the run --------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any NURTURE_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@dataclass
class Bench:
    """One benchmark run's world: a work directory, a Redis, a stand-in, a catalog."""

    workdir: Path
    redis_server: RedisProcess
    standin: StandIn
    sequences_dir: Path
    templates_dir: Path
    content_dir: Path
    workers: int
    threads: int
    procs: list[Proc] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    @property
    def redis(self) -> redis.Redis:
        return self.redis_server.client()

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a ``nurture`` subprocess of this run."""
        values = {
            "NURTURE_REDIS_URL": self.redis_url,
            "NURTURE_SEQUENCES_DIR": str(self.sequences_dir),
            "NURTURE_TEMPLATES_DIR": str(self.templates_dir),
            "NURTURE_CONTENT_DIR": str(self.content_dir),
            "NURTURE_DELIVERY": "sendgrid",
            "NURTURE_SENDGRID_API_KEY": API_KEY,
            "NURTURE_SENDGRID_HOST": self.standin.url,
            "NURTURE_FROM_EMAIL": "hello@nurture.example",
            "NURTURE_FROM_NAME": "Nurture Team",
            "NURTURE_POSTAL_ADDRESS": "Vesterbrogade 1, 1620 Copenhagen V, Denmark",
            "NURTURE_PUBLIC_URL": "https://nurture.example",
            "NURTURE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "NURTURE_UNSUBSCRIBE_SECRET": "bench-unsubscribe-secret",
            "NURTURE_FREQUENCY_CAP": "0s",
            "NURTURE_STATE_DIR": str(self.workdir / ".nurture"),
            "NURTURE_LOG_LEVEL": "INFO",  # the production default
        }
        values.update(extra)
        return clean_env(**values)

    def settings(self, **overrides: Any) -> Settings:
        """Settings for an in-process runtime, equal to what the subprocesses get."""
        values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "sequences_dir": self.sequences_dir,
            "templates_dir": self.templates_dir,
            "content_dir": self.content_dir,
            "delivery": "sendgrid",
            "sendgrid_api_key": API_KEY,
            "sendgrid_host": self.standin.url,
            "from_email": "hello@nurture.example",
            "from_name": "Nurture Team",
            "postal_address": "Vesterbrogade 1, 1620 Copenhagen V, Denmark",
            "public_url": "https://nurture.example",
            "webhook_secrets": [WEBHOOK_SECRET],
            "unsubscribe_secret": "bench-unsubscribe-secret",
            "frequency_cap": 0.0,
            "state_dir": self.workdir / ".nurture",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def spawn(self, name: str, args: list[str], *, env: dict[str, str] | None = None) -> Proc:
        """Start a subprocess logging to ``logs/<name>.log`` in the work directory."""
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            popen = subprocess.Popen(
                args,
                cwd=self.workdir,  # so no developer's .env is read
                env=env or self.env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_workers(
        self, count: int | None = None, env: dict[str, str] | None = None
    ) -> list[Proc]:
        """Start ``nurture worker`` processes (with ``env``, default :meth:`env`) and
        wait until each scheduler ticks."""
        count = count or self.workers
        client = self.redis
        client.delete(f"{PREFIX}:schedulers")
        # One process each (``--processes 1``): the benchmark sets the process count.
        command = [*nurture_command(), "worker", "--processes", "1", "--threads"]
        procs = [
            self.spawn(f"worker-{index}", [*command, str(self.threads)], env=env)
            for index in range(count)
        ]

        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited at start:\n{proc.tail()}")
            return int(client.hlen(f"{PREFIX}:schedulers")) >= count

        wait_until(ready, 60, "the nurture workers to start", interval=0.05)
        client.close()
        return procs

    def start_default_worker(
        self, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> Proc:
        """Start ``nurture worker`` with no flags, as the README runs it (one process per
        CPU under one supervisor), and wait until every child's scheduler ticks.
        ``command`` replaces ``nurture`` (e.g. another checkout's interpreter)."""
        client = self.redis
        client.delete(f"{PREFIX}:schedulers")
        proc = self.spawn("worker-default", [*(command or nurture_command()), "worker"], env=env)
        from worker.worker_process import default_processes

        expected = default_processes()

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"nurture worker exited at start:\n{proc.tail()}")
            return int(client.hlen(f"{PREFIX}:schedulers")) >= expected

        wait_until(ready, 60, "the default nurture worker to start", interval=0.05)
        client.close()
        return proc

    def stop(self, procs: Sequence[Proc]) -> None:
        for proc in procs:
            proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)

    def flush(self) -> None:
        """Empty the run's own Redis (never anyone else's: we started this one)."""
        client = self.redis
        client.flushall()
        client.close()

    def redis_info(self, section: str) -> dict[str, Any]:
        client = self.redis
        try:
            info: dict[str, Any] = client.info(section)
            return info
        finally:
            client.close()

    def redis_cpu(self) -> float:
        info = self.redis_info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def used_memory(self) -> int:
        return int(self.redis_info("memory")["used_memory"])


@contextlib.contextmanager
def bench_world(workdir: Path, workers: int, threads: int) -> Iterator[Bench]:
    """Start Redis (AOF everysec, as in production) and the stand-in; tear all down."""
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = workdir / "catalog"
    if catalog.exists():
        shutil.rmtree(catalog)
    sequences = catalog / "sequences"
    sequences.mkdir(parents=True)
    (sequences / f"{SEQUENCE_ID}.yaml").write_text(BENCH_SEQUENCE)
    shutil.copytree(ROOT / "templates", catalog / "templates")
    shutil.copytree(ROOT / "content", catalog / "content")
    if (workdir / "redis").exists():
        shutil.rmtree(workdir / "redis")  # never load an old run's AOF
    server = start_redis(workdir / "redis", free_port(), appendonly=True)
    standin: StandIn | None = None
    bench: Bench | None = None
    try:
        standin = StandIn(workdir / "logs" / "standin.log")
        bench = Bench(
            workdir=workdir,
            redis_server=server,
            standin=standin,
            sequences_dir=sequences,
            templates_dir=catalog / "templates",
            content_dir=catalog / "content",
            workers=workers,
            threads=threads,
        )
        yield bench
    finally:
        if bench is not None:
            for proc in list(bench.procs):
                proc.stop(timeout=20)
        if standin is not None:
            standin.stop()
        server.stop()


def _git(*args: str) -> str:
    """Output of a git command in the repository ('' when git is not available)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    return ""


def environment_line(bench: Bench) -> str:
    """CPU count and model, Python, Redis and library versions, date, commit."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis_version = bench.redis_info("server").get("redis_version", "?")
    import dramatiq

    commit = _git("rev-parse", "--short", "HEAD") or "?"
    changed = _git("status", "--porcelain", "--untracked-files=no")
    dirty = " (plus uncommitted changes to tracked files)" if changed else ""
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}){memory}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"Redis {redis_version} (AOF everysec), dramatiq {dramatiq.__version__}, "
        f"date {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, commit {commit}{dirty}"
    )
