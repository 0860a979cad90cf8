"""Benchmark 7: leads in → emails out, as a user runs it, beside raw dramatiq.

``nurture emit`` of a file of N new ``lead.created`` events into a running default
``nurture worker`` (no flags: one process per CPU, 8 threads each), delivering to the
outbox folder or to the SendGrid stand-in (at a chosen latency). The clock starts when
``nurture emit`` starts and stops at the N-th email out (the newest ``.eml`` file's
modification time, or the stand-in's receive time of the N-th message). In the same run,
on the same Redis, a no-op dramatiq actor with as many processes and threads processes
N messages (:func:`benchmarks.pipeline.noop_run`); the ratio is what the per-lead work
costs against dramatiq's own floor.

    python -m benchmarks.e2e [--count 2000] [--latency 0.15]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, bench_world, nurture_command, wait_until
from benchmarks.ingest import write_jsonl
from benchmarks.pipeline import noop_run
from worker.worker_process import default_processes


def _emails_out(bench: Bench, delivery: str, outbox: Path) -> int:
    if delivery == "outbox":
        return sum(1 for _ in outbox.glob("*.eml")) if outbox.exists() else 0
    return bench.standin.accepted()


def e2e_run(bench: Bench, count: int, delivery: str, latency: float = 0.0) -> dict[str, Any]:
    """One timed run: emit ``count`` leads into the default worker, wait for the mail."""
    bench.flush()
    bench.standin.reset()
    bench.standin.latency(latency)
    outbox = bench.workdir / f"outbox-{time.time_ns()}"
    env = bench.env(NURTURE_DELIVERY=delivery, NURTURE_OUTBOX_DIR=str(outbox))
    events = write_jsonl(bench.workdir / f"e2e-{count}.jsonl", count, tag="e2e")
    worker = bench.start_default_worker(env)
    try:
        started = time.time()
        emit = bench.spawn("e2e-emit", [*nurture_command(), "emit", str(events)], env=env)
        if emit.popen.wait(timeout=600) != 0:
            raise RuntimeError(f"nurture emit failed:\n{emit.tail()}")
        emitted = time.time()
        wait_until(
            lambda: _emails_out(bench, delivery, outbox) >= count,
            120 + count / 10,
            f"{count} emails out through {delivery}",
            interval=0.05,
        )
        if delivery == "outbox":
            finished = max(path.stat().st_mtime for path in outbox.glob("*.eml"))
        else:
            finished = max(float(m["received_at"]) for m in bench.standin.messages(count - 1))
        out = _emails_out(bench, delivery, outbox)
    finally:
        bench.stop([worker])
    seconds = finished - started
    return {
        "leads": count,
        "delivery": delivery,
        "latency_s": latency,
        "processes": default_processes(),
        "seconds": seconds,
        "emit_seconds": emitted - started,
        "leads_per_s": count / seconds,
        "emails_out": out,
    }


def e2e_suite(
    bench: Bench, count: int, latencies: tuple[float, ...] = (0.0, 0.15), runs: int = 1
) -> dict[str, Any]:
    """Outbox and stand-in runs plus the raw-dramatiq no-op figure, alternating, same run."""
    rows: list[dict[str, Any]] = []
    noop: list[dict[str, Any]] = []
    for _ in range(runs):
        rows.append(e2e_run(bench, count, "outbox"))
        for latency in latencies:
            rows.append(e2e_run(bench, count, "sendgrid", latency))
        noop.append(noop_run(bench, count))
    return {"rows": rows, "noop": noop}


def render_e2e(result: dict[str, Any]) -> str:
    """Markdown: leads/s per delivery and latency, and the share of raw dramatiq."""
    noop = sorted(r["messages_per_s"] for r in result["noop"])[len(result["noop"]) // 2]
    groups: dict[tuple[str, float], list[float]] = {}
    for row in result["rows"]:
        groups.setdefault((row["delivery"], row["latency_s"]), []).append(row["leads_per_s"])
    lines = [
        "| leads in → emails out | leads/s (median) | share of raw dramatiq no-op |",
        "|---|---|---|",
    ]
    for (delivery, latency), values in groups.items():
        rate = sorted(values)[len(values) // 2]
        where = "outbox" if delivery == "outbox" else f"SendGrid stand-in, {latency * 1000:.0f} ms"
        lines.append(f"| {where} | {rate:,.0f} | {rate / noop:.3f} |")
    lines.append(f"| raw dramatiq no-op (messages/s) | {noop:,.0f} | 1 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--latencies", default="0,150", help="stand-in latencies, ms")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    latencies = tuple(int(v) / 1000 for v in args.latencies.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nurture-bench-e2e-"))
    with bench_world(workdir, default_processes(), 8) as bench:
        result = e2e_suite(bench, args.count, latencies, args.runs)
    print(render_e2e(result))
    print(json.dumps(result), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
