"""Profile the sender: where a batch of due touches spends its time, wall and CPU.

``count`` due touches are sent in this process by the real ``TouchSender`` in batches
of ``Tuning.touches_per_message`` (as one ``send_touches`` message each), to the
SendGrid stand-in answering after ``latency`` seconds. Prints:

* the median wall time per batch and per touch (``count`` touches, no profiler);
* **CPU per touch**, split by where it is spent: this process's calling thread (its
  total measured without a profiler, split by area as ``cProfile`` on thread CPU time
  saw it over another ``count`` touches: reading, pauses, reserving, rendering,
  recording, handing to the pool, the rest), the SendGrid pool threads (request
  building and HTTP), Redis itself and the stand-in; and the Redis round trips per
  touch (a pipeline is one);
* pyinstrument's wall-clock call tree of the calling thread over a third ``count``
  touches (the SendGrid pool threads show up as the time the batch waits in
  ``send_many``).

    python -m benchmarks.profile_sender [--count 600] [--latency 0.15] [--top N]
        [--html out.html]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import redis
from pyinstrument import Profiler

from benchmarks.common import Bench, bench_world
from benchmarks.state import write_leads
from worker.runtime import Runtime, Tuning
from worker.sending import Touch

#: Steps of the calling thread's work: (label, file, function); their cumulative CPU.
STEPS = [
    ("read touch states (per batch)", "worker/sending.py", ("_read_states",)),
    ("read the pauses", "worker/store/pauses.py", ("state",)),
    ("reserve in the ledger (Lua)", "worker/store/ledger.py", ("reserve", "reserve_many")),
    ("render (Jinja2, unsubscribe token)", "worker/sending.py", ("_render",)),
    ("record and advance (Lua)", "worker/store/ledger.py", ("advance", "advance_many")),
    ("hand to / collect from the SendGrid pool", "worker/delivery/sendgrid.py", ("send_many",)),
]


def cpu_steps(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of thread CPU per step (cumulative, so each includes its Redis client
    work), and the rest of the sender."""
    stats = pstats.Stats(profile)
    rows = stats.stats  # type: ignore[attr-defined]
    total = max(row[3] for row in rows.values())
    steps: dict[str, float] = {}
    for label, file, functions in STEPS:
        steps[label] = sum(
            row[3]
            for (name, _, func), row in rows.items()
            if name.endswith(file) and func in functions
        )
    steps["the rest of the sender"] = max(0.0, total - sum(steps.values()))
    return steps


class RoundTrips:
    """Counts Redis round trips of this process (a pipeline is one), every thread."""

    def __init__(self) -> None:
        self.count = 0
        self._original = redis.connection.AbstractConnection.send_packed_command

    def __enter__(self) -> RoundTrips:
        original = self._original

        def counted(conn: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            original(conn, *args, **kwargs)

        redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        redis.connection.AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]


def _timed(
    batches: list[list[Touch]], send: Callable[[list[Touch]], object], bench: Bench
) -> tuple[list[float], dict[str, float]]:
    """Send the batches without a profiler: wall per batch, CPU totals, round trips."""
    redis_cpu, standin_cpu = bench.redis_cpu(), bench.standin.cpu()
    process_cpu, thread_cpu = time.process_time(), time.thread_time()
    walls: list[float] = []
    with RoundTrips() as trips:
        for batch in batches:
            began = time.perf_counter()
            send(batch)
            walls.append(time.perf_counter() - began)
    totals = {
        "calling thread": time.thread_time() - thread_cpu,
        "process": time.process_time() - process_cpu,
        "redis": bench.redis_cpu() - redis_cpu,
        "stand-in": bench.standin.cpu() - standin_cpu,
        "round trips": float(trips.count),
    }
    return walls, totals


def _profiled(
    batches: list[list[Touch]], send: Callable[[list[Touch]], object], top: int
) -> dict[str, float]:
    """The calling thread's CPU by area, as shares (cProfile on thread CPU time); prints
    the ``top`` functions by own time."""
    profile = cProfile.Profile(time.thread_time)
    for batch in batches:
        profile.runcall(send, batch)
    if top:
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)
    steps = cpu_steps(profile)
    total = sum(steps.values()) or 1.0
    return {name: seconds / total for name, seconds in steps.items()}


def report_cpu(count: int, totals: dict[str, float], shares: dict[str, float]) -> str:
    """The CPU-per-touch table (milliseconds); the sender thread's total (measured
    without a profiler) is split by the shares cProfile saw."""
    ms = 1000 / count
    thread = totals["calling thread"]
    pool = max(0.0, totals["process"] - thread)
    rows = [
        "| where | CPU ms per touch |",
        "|---|---|",
        *(
            f"| sender thread: {name} | {share * thread * ms:.2f} |"
            for name, share in shares.items()
        ),
        f"| **sender thread, total** | {thread * ms:.2f} |",
        f"| SendGrid pool threads (payload, JSON, HTTP) | {pool * ms:.2f} |",
        f"| Redis server | {totals['redis'] * ms:.2f} |",
        f"| stand-in | {totals['stand-in'] * ms:.2f} |",
        f"| Redis round trips per touch (this process, all threads) "
        f"| {totals['round trips'] / count:.2f} |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_sender")
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.15, help="stand-in latency, s")
    parser.add_argument("--html", type=Path, default=None)
    parser.add_argument("--top", type=int, default=0, help="print the top N functions (CPU)")
    args = parser.parse_args(argv)
    size = Tuning().touches_per_message
    workdir = Path(tempfile.mkdtemp(prefix="nurture-profile-"))
    with bench_world(workdir, 1, 8) as bench:
        bench.flush()
        bench.standin.reset()
        bench.standin.latency(args.latency)
        total = 3 * args.count + size
        write_leads(bench.redis_url, "prof", range(total), lambda i: time.time() - 1)
        runtime = Runtime(bench.settings())
        try:
            claimed = runtime.store.claim_due(time.time(), total, 600)
            touches = [Touch(member, due) for member, due in claimed]
            batches = [touches[i : i + size] for i in range(0, len(touches), size)]
            send = runtime.sender.send_batch
            send(batches[0])  # connections, scripts, templates
            third = len(batches[1:]) // 3
            walls, totals = _timed(batches[1 : 1 + third], send, bench)
            shares = _profiled(batches[1 + third : 1 + 2 * third], send, args.top)
            profiler = Profiler(interval=0.0005)
            with profiler:
                for batch in batches[1 + 2 * third :]:
                    send(batch)
        finally:
            runtime.close()
    per_batch = median(walls)
    print(
        f"{args.count} touches at {args.latency * 1000:.0f} ms, batches of {size}: "
        f"median {per_batch * 1000:.1f} ms per batch, {per_batch / size * 1000:.2f} ms "
        f"per touch ({size / per_batch:.0f} touches/s on one thread); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print(report_cpu(third * size, totals, shares))
    print()
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
