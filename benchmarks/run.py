"""Run the benchmark suite and write the Markdown report.

    python -m benchmarks.run [--size tiny|small|full] [--runs N] [--out FILE.md]

``tiny`` is the CI smoke size (well under a minute), ``small`` takes a few minutes,
``full`` is the issue's size (100,000-event emit, 1,000,000 pending touches, 10,000
due in one minute) and takes about 20-25 minutes on 2 cores. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import burst, delivery, e2e, ingest, pipeline, profiling, scale
from benchmarks.common import bench_world, environment_line
from benchmarks.report import render
from benchmarks.state import check_fidelity


@dataclass(frozen=True)
class Size:
    """How big each benchmark is."""

    http_requests: int  # single-event POST /events requests
    http_concurrency: int
    http_batches: int  # batch requests...
    http_batch_size: int  # ...of this many events
    emit_events: int
    pipeline_touches: int
    noop_messages: int
    levels: tuple[int, ...]  # pending touches per scale level
    burst: int  # touches falling due together in the lateness test
    burst_window: float  # ...spread over this many seconds
    runs: int  # default repetitions of the throughput figures
    top_repeats: int  # repetitions of bursts and ZADD timing at the largest level
    settle: float  # seconds the workers idle before their RSS is read
    anatomy_touches: int
    separate_profile_run: bool  # profile a run of its own (else the last measured run)
    latencies_ms: tuple[int, ...]  # stand-in latencies of the delivery-layer table
    delivery_window: float  # seconds per delivery-layer figure
    monday_burst: int  # touches due at the same 09:00 (0: skip; each run starts a worker)
    e2e_leads: int  # leads emitted in the end-to-end runs (0: skip)
    e2e_latencies: tuple[float, ...]  # stand-in latencies (s) of the end-to-end runs


SIZES = {
    "tiny": Size(
        http_requests=120,
        http_concurrency=8,
        http_batches=6,
        http_batch_size=50,
        emit_events=1_000,
        pipeline_touches=200,
        noop_messages=400,
        levels=(1_000, 2_000),
        burst=100,
        burst_window=1.0,
        runs=1,
        top_repeats=1,
        settle=0.5,
        anatomy_touches=40,
        separate_profile_run=False,
        latencies_ms=(0, 150),
        delivery_window=0.3,
        # Starting a default worker takes seconds: the burst and end-to-end benchmarks
        # have their own smoke test (tests/test_benchmarks_latency_smoke.py).
        monday_burst=0,
        e2e_leads=0,
        e2e_latencies=(0.15,),
    ),
    "small": Size(
        http_requests=2_000,
        http_concurrency=16,
        http_batches=50,
        http_batch_size=100,
        emit_events=10_000,
        pipeline_touches=2_000,
        noop_messages=6_000,
        levels=(10_000, 100_000),
        burst=2_500,
        burst_window=15.0,
        runs=3,
        top_repeats=1,
        settle=3.0,
        anatomy_touches=300,
        separate_profile_run=True,
        latencies_ms=(0, 50, 150, 300),
        delivery_window=2.0,
        monday_burst=10_000,
        e2e_leads=2_000,
        e2e_latencies=(0.0, 0.15),
    ),
    "full": Size(
        http_requests=5_000,
        http_concurrency=16,
        http_batches=200,
        http_batch_size=100,
        emit_events=100_000,
        pipeline_touches=10_000,
        noop_messages=20_000,
        levels=(10_000, 100_000, 1_000_000),
        burst=10_000,
        burst_window=60.0,
        runs=3,
        top_repeats=3,
        settle=5.0,
        anatomy_touches=500,
        separate_profile_run=True,
        latencies_ms=(0, 50, 150, 300),
        delivery_window=3.0,
        monday_burst=100_000,
        e2e_leads=10_000,
        e2e_latencies=(0.0, 0.15),
    ),
}


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)


def run_suite(
    size_name: str, runs: int | None, workdir: Path, workers: int, threads: int, command: str
) -> dict[str, Any]:
    size = SIZES[size_name]
    runs = runs or size.runs
    say = Progress()
    started = time.monotonic()
    results: dict[str, Any] = {
        "size": size_name,
        "runs": runs,
        "workers": workers,
        "threads": threads,
        "cpus": os.cpu_count() or 1,
        "command": command,
        "burst": size.burst,
        "burst_window": size.burst_window,
    }
    with bench_world(workdir, workers, threads) as bench:
        results["environment"] = environment_line(bench)
        say("checking the direct state writer against the real pipeline")
        results["fidelity"] = check_fidelity(bench)
        if not results["fidelity"]["match"]:
            say(f"WARNING: direct writer differs: {results['fidelity']['detail']}")

        say(f"ingest: POST /events, {size.http_requests} single-event requests x {runs}")
        results["http_single"] = ingest.http_runs(
            bench, size.http_requests, 1, size.http_concurrency, runs
        )
        say(f"ingest: POST /events, {size.http_batches} x {size.http_batch_size} events x {runs}")
        results["http_batch"] = ingest.http_runs(
            bench, size.http_batches, size.http_batch_size, max(1, workers * 2), runs
        )
        say(f"ingest: nurture emit of {size.emit_events} events x {runs}")
        results["emit"] = ingest.emit_runs(bench, size.emit_events, runs)
        rates = [
            sorted(r["events_per_s"] for r in results[k])[len(results[k]) // 2]
            for k in ("http_single", "http_batch", "emit")
        ]
        say(
            f"ingest: {rates[0]:.0f} events/s HTTP, {rates[1]:.0f} events/s batched, "
            f"{rates[2]:.0f} events/s emit"
        )

        results["pipeline"], results["noop"] = [], []
        for run in range(runs):
            profile_dir = None
            if not size.separate_profile_run and run == runs - 1:
                profile_dir = workdir / "profile"
            result = pipeline.pipeline_run(bench, size.pipeline_touches, profile_dir)
            results["pipeline"].append(result)
            noop = pipeline.noop_run(bench, size.noop_messages)
            results["noop"].append(noop)
            say(
                f"pipeline run {run + 1}/{runs}: {result['touches_per_s']:.0f} touches/s; "
                f"raw dramatiq {noop['messages_per_s']:.0f} messages/s"
            )
            if profile_dir is not None:
                results["profile_run"] = result
        if size.separate_profile_run:
            say("pipeline: one more run with py-spy attached (not in the medians)")
            results["profile_run"] = pipeline.pipeline_run(
                bench, size.pipeline_touches, workdir / "profile"
            )
        say("pipeline: anatomy of a touch, round-trip and keep-alive costs")
        results["anatomy"] = profiling.touch_anatomy(bench, size.anatomy_touches)
        results["rt_cost"] = profiling.redis_round_trip_cost(bench)
        results["keepalive"] = profiling.keepalive_comparison(bench)

        results["levels"] = []
        for level in size.levels:
            repeats = size.top_repeats if level == size.levels[-1] else 1
            say(f"scheduler at scale: {level} pending ({repeats} repeat(s) of the bursts)")
            figures = scale.scale_level(
                bench, level, size.burst, size.burst_window, repeats, size.settle
            )
            results["levels"].append(figures)
            spread = figures["spread"][-1]
            say(
                f"  {figures['schedule'][-1]['schedule_bytes']:.0f} B/touch, "
                f"{figures['state_bytes']:.0f} B/lead, lateness p99 {spread['p99_s']:.2f} s, "
                f"worker RSS {figures['rss_idle'] / 2**20:.0f} MB"
            )
        say(f"delivery layer over stand-in latencies {size.latencies_ms} ms")
        # Tiny: the two modes the sender chooses between, not the httpx prototype.
        modes = delivery.MODES[:2] if size_name == "tiny" else delivery.MODES
        results["delivery"] = delivery.latency_table(
            bench.standin, size.latencies_ms, duration=size.delivery_window, runs=runs, modes=modes
        )
        if size.monday_burst:
            say(f"Monday burst: {size.monday_burst} touches due at once, stand-in at 150 ms")
            results["monday_burst"] = burst.monday_burst(bench, size.monday_burst)
            say(
                f"  drained in {results['monday_burst']['drain_s']:.1f} s, lateness p95 "
                f"{results['monday_burst']['lateness_p95_s']:.1f} s"
            )
        if size.e2e_leads:
            say(f"end to end: nurture emit of {size.e2e_leads} leads into the default worker")
            results["e2e"] = e2e.e2e_suite(bench, size.e2e_leads, size.e2e_latencies, runs)
    results["elapsed"] = time.monotonic() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default by size)")
    parser.add_argument("--out", type=Path, default=None, help="write the report here too")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    parser.add_argument(
        "--workers", type=int, default=min(os.cpu_count() or 2, 4), help="worker processes"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run's files here")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="measure nothing: write the report again from a --json file of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        report = render(json.loads(args.from_json.read_text(encoding="utf-8")))
        print(report)
        if args.out:
            args.out.write_text(report + "\n", encoding="utf-8")
        return 0
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    command = "python -m benchmarks.run " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    try:
        results = run_suite(
            args.size, args.runs, workdir, args.workers, args.threads, command.strip()
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(results)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n", encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
