"""Benchmark 2: touches per second from due-in-schedule to accepted-by-SendGrid, and
the throughput of a no-op dramatiq actor in the same run, on the same Redis.

Pipeline run:
  1. ``lead.created`` events for N new leads go through the real pipeline (ingest and
     the real event actor): N enrollments, each with its first touch due at once.
  2. The schedule is renamed aside, ``nurture worker`` processes (delivery: sendgrid,
     to the stand-in) are started and wait until their schedulers tick.
  3. The schedule is renamed back (one atomic step): N touches are due *now*. The
     clock runs until the stand-in has accepted the N-th message (its own receive
     time of that message).
Raw dramatiq run:
  N' messages for a no-op actor are queued; as many processes with as many threads,
  on a ``Runtime`` built like the worker's, start consuming at one signal; the clock
  runs until the queue is empty and every message acknowledged.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DRAMATIQ_NAMESPACE,
    Bench,
    CpuWindow,
    Proc,
    clean_env,
    py_spy_command,
    wait_until,
)
from benchmarks.noop_worker import GO_KEY, NOOP_QUEUE, READY_KEY, declare_noop
from benchmarks.profiling import parse_raw, summarise_cpu, summarise_wall
from benchmarks.state import KEYS, park_schedule, preload_real, unpark_schedule
from worker.runtime import Runtime
from worker.store import Store

SPY_RATE = 100  # py-spy samples per second


def pipeline_run(bench: Bench, count: int, profile_dir: Path | None = None) -> dict[str, Any]:
    """One timed pipeline run of ``count`` touches; with ``profile_dir``, py-spy is
    attached to the workers for the timed window (worker 0 wall-clock, worker 1 GIL)
    and the result has their summaries."""
    bench.flush()
    memory_before = bench.used_memory()
    preload = preload_real(bench, "pipe", count)
    memory_after = bench.used_memory()
    park_schedule(bench)
    bench.standin.reset()
    workers = bench.start_workers()
    spies: list[tuple[Proc, Path]] = []
    spy_error = ""
    spy_seconds = 0.0
    try:
        spy = py_spy_command()
        if profile_dir is not None and spy is None:
            spy_error = "py-spy is not installed"
        elif profile_dir is not None and spy is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            # Worker 0 wall-clock (idle threads included), worker 1 only the thread
            # holding the GIL (where Python spends CPU); attached for the timed window.
            for index, (worker, idle) in enumerate(zip(workers, (True, False), strict=False)):
                out = profile_dir / f"worker-{index}-{'wall' if idle else 'gil'}.txt"
                out.unlink(missing_ok=True)
                args = [spy, "record", "--pid", str(worker.pid), "--format", "raw"]
                args += ["--rate", str(SPY_RATE), "--nonblocking", "--threads", "-o", str(out)]
                args += ["--idle"] if idle else ["--gil"]
                spies.append((bench.spawn(f"py-spy-{index}", args, env=clean_env()), out))
            spy_seconds = -time.monotonic()
            time.sleep(1.0)
            for proc, _ in spies:
                if not proc.alive():
                    spy_error = f"py-spy could not attach: {proc.tail(300).strip()}"
        with CpuWindow(bench, workers) as window:
            started = unpark_schedule(bench)
            wait_until(
                lambda: bench.standin.accepted() >= count,
                120 + count / 20,
                f"the stand-in to accept {count} messages",
                interval=0.05,
            )
        last = bench.standin.messages(since=count - 1)
        finished = max(float(m["received_at"]) for m in last)
        cpu = window.result()
        client = bench.redis
        # Let the workers finish recording (ledger, advance) before looking for errors.
        store = Store(client, KEYS.prefix)
        wait_until(lambda: store.schedule.stats().claimed == 0, 60, "the workers to finish", 0.05)
        dead = int(client.xlen(KEYS.dead))
        counters = store.global_counters()
        client.close()
        spy_seconds += time.monotonic()
        for proc, _ in spies:
            if proc.alive():
                proc.popen.send_signal(signal.SIGINT)  # py-spy writes its output on ^C
        for proc, _ in spies:
            proc.popen.wait(timeout=60)
    finally:
        bench.stop([proc for proc, _ in spies])
        bench.stop(workers)
    seconds = finished - started
    result: dict[str, Any] = {
        "touches": count,
        "seconds": seconds,
        "touches_per_s": count / seconds,
        "worker_cpu_ms": cpu["procs_cpu"] / count * 1000,
        "redis_cpu_ms": cpu["redis_cpu"] / count * 1000,
        "standin_cpu_ms": cpu["standin_cpu"] / count * 1000,
        "machine_busy_cores": cpu["machine_busy_cores"],
        "foreign_cores": cpu["foreign_cores"],
        "sent_counter": counters.get("sent", 0.0),
        "dead_letters": dead,
        "preload_events_per_s": preload["events_per_s"],
        "real_state_bytes_per_lead": (memory_after - memory_before) / count,
    }
    if profile_dir is not None:
        outputs = [out for _, out in spies if out.exists()]
        if spy_error or len(outputs) < len(spies) or not spies:
            result["profile_error"] = spy_error or "py-spy wrote no output"
        else:
            result["profile_wall"] = summarise_wall(parse_raw(outputs[0]))
            if len(outputs) > 1:
                result["profile_cpu"] = summarise_cpu(parse_raw(outputs[1]))
            result["profile_files"] = [str(o) for o in outputs]
            result["profile_seconds"] = spy_seconds
            result["profile_rate"] = SPY_RATE
    return result


def noop_run(bench: Bench, count: int) -> dict[str, Any]:
    """Throughput of a no-op actor: same broker config, processes and threads."""
    client = bench.redis
    client.delete(GO_KEY, READY_KEY)
    runtime = Runtime(bench.settings(), load_catalog=False)
    try:
        actor = declare_noop(runtime)
        for _ in range(count):
            actor.send()
    finally:
        runtime.close()
    messages_key = f"{DRAMATIQ_NAMESPACE}:{NOOP_QUEUE}.msgs"
    queue_key = f"{DRAMATIQ_NAMESPACE}:{NOOP_QUEUE}"
    procs = [
        bench.spawn(
            f"noop-{index}",
            [sys.executable, "-m", "benchmarks.noop_worker", "--threads", str(bench.threads)],
        )
        for index in range(bench.workers)
    ]
    try:

        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            return int(client.scard(READY_KEY)) >= len(procs)

        wait_until(ready, 60, "the no-op workers to start", 0.05)
        time.sleep(0.3)  # let them settle into polling the go key
        with CpuWindow(bench, procs) as window:
            started = time.time()
            client.set(GO_KEY, "1")
            finished = wait_until(
                lambda: int(client.hlen(messages_key)) == 0 and int(client.llen(queue_key)) == 0,
                120 + count / 100,
                f"the no-op workers to process {count} messages",
                interval=0.002,
            )
        cpu = window.result()
    finally:
        bench.stop(procs)
        client.delete(GO_KEY, READY_KEY)
        client.close()
    seconds = finished - started
    return {
        "messages": count,
        "seconds": seconds,
        "messages_per_s": count / seconds,
        "worker_cpu_ms": cpu["procs_cpu"] / count * 1000,
        "redis_cpu_ms": cpu["redis_cpu"] / count * 1000,
        "machine_busy_cores": cpu["machine_busy_cores"],
        "foreign_cores": cpu["foreign_cores"],
    }
