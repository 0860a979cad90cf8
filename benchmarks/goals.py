"""Benchmark 8: issue 15's goals, measured on default settings in one run.

* **Latency table**: ``count`` leads (default 1,500) each due one touch at once, sent by
  the default ``nurture worker`` (one process per CPU, default threads, default SendGrid
  concurrency) to the stand-in answering after 0 / 50 / 150 / 300 ms. The latencies
  alternate within each repetition so load on the machine hits them alike; each figure
  is the median over the repetitions. Goal: 150 ms ≥ 0.8 × 0 ms.
* **Monday burst** (:mod:`benchmarks.burst`): ``burst`` touches due at the same local
  09:00 against a 150 ms stand-in: drain time, order, events during the drain.
* **End to end** (:mod:`benchmarks.e2e`): ``nurture emit`` of new leads → emails out,
  beside raw dramatiq's no-op figure.

Every run checks that each lead received exactly one email.

    python -m benchmarks.goals [--count 1500] [--runs 3] [--burst 10000] [--e2e 2000]
        [--out benchmarks/RESULTS.md] [--json benchmarks/RESULTS.json]

With ``--out``/``--json`` the results replace the "Issue 15 goals" section of the
report and the ``goals`` key of the JSON, leaving the rest of the suite's report as is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks import burst, e2e
from benchmarks.common import bench_world
from worker.delivery.sendgrid import DEFAULT_CONCURRENCY
from worker.worker_process import default_processes

START = "<!-- issue-15-goals:start -->"
END = "<!-- issue-15-goals:end -->"
BURST_GOAL_S = 300.0


def latency_table(
    bench: Any, count: int, latencies: tuple[float, ...], runs: int
) -> list[dict[str, Any]]:
    """Runs of ``count`` touches due at once per latency, alternating, ``runs`` times."""
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        for latency in latencies:
            result = burst.monday_burst(bench, count, latency=latency, lead_in=8.0)
            result["run"] = run
            rows.append(result)
            print(
                f"  run {run + 1}/{runs}, {latency * 1000:.0f} ms: "
                f"{result['touches_per_s']:.0f} touches/s, {result['received']} received, "
                f"{result['duplicates']} twice",
                file=sys.stderr,
                flush=True,
            )
    return rows


def medians(rows: list[dict[str, Any]]) -> dict[float, float]:
    """Median touches/s per latency."""
    groups: dict[float, list[float]] = {}
    for row in rows:
        groups.setdefault(row["latency_s"], []).append(row["touches_per_s"])
    return {latency: median(values) for latency, values in groups.items()}


def render(result: dict[str, Any]) -> str:
    """Markdown of the goals run."""
    rates = {float(k): v for k, v in result["latency_medians"].items()}
    zero = rates.get(0.0, 0.0)
    lines = [
        f"**Command:** `{result['command']}`  ",
        f"**Environment:** {result['environment']}  ",
        f"**Defaults:** `nurture worker` with {result['processes']} processes x 8 threads, "
        f"SendGrid concurrency {result['concurrency']} per process, "
        f"{result['runs']} repetitions (medians)",
        "",
        f"| stand-in answers after | touches/s ({result['count']:,} due at once, median) "
        "| share of 0 ms | every lead once |",
        "|---|---|---|---|",
    ]
    for latency, rate in sorted(rates.items()):
        rows = [r for r in result["latency_rows"] if r["latency_s"] == latency]
        once = all(r["received"] == r["touches"] and r["duplicates"] == 0 for r in rows)
        share = rate / zero if zero else float("nan")
        mark = "yes" if once else "**no**"
        lines.append(f"| {latency * 1000:.0f} ms | {rate:,.0f} | {share:.2f} | {mark} |")
    lines.append("")
    if result.get("burst"):
        b = result["burst"]
        lines += [burst.render_burst(b), ""]
        per_s = b["touches_per_s"]
        lines.append(
            f"At {per_s:,.0f} touches/s, 100,000 touches drain in about "
            f"{100_000 / per_s:,.0f} s (goal: {BURST_GOAL_S:.0f} s)"
            + (
                " — extrapolated from this run's size, not measured at 100,000."
                if b["touches"] < 100_000
                else "."
            )
        )
        lines.append("")
    if result.get("e2e"):
        lines += [e2e.render_e2e(result["e2e"]), ""]
    return "\n".join(lines)


def replace_section(path: Path, body: str) -> None:
    """Put ``body`` between the goal markers of ``path`` (appending them if absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = f"{START}\n## Issue 15 goals (latency, Monday burst, end to end)\n\n{body}\n{END}"
    if START in text and END in text:
        text = re.sub(
            re.escape(START) + ".*?" + re.escape(END), lambda _m: section, text, flags=re.S
        )
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.goals", description=__doc__)
    parser.add_argument("--count", type=int, default=1_500)
    parser.add_argument("--latencies", default="0,50,150,300", help="stand-in latencies, ms")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=int, default=10_000, help="0: skip")
    parser.add_argument("--e2e", type=int, default=2_000, help="0: skip")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    latencies = tuple(float(ms) / 1000 for ms in args.latencies.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nurture-bench-goals-"))
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": "python -m benchmarks.goals " + shlex.join(argv or sys.argv[1:]),
        "environment": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the start",
        "processes": default_processes(),
        "concurrency": DEFAULT_CONCURRENCY,
        "count": args.count,
        "runs": args.runs,
    }
    with bench_world(workdir, 1, 8) as bench:
        print(f"latency table: {args.count} touches x {latencies}", file=sys.stderr, flush=True)
        result["latency_rows"] = latency_table(bench, args.count, latencies, args.runs)
        result["latency_medians"] = medians(result["latency_rows"])
        if args.burst:
            print(f"Monday burst: {args.burst} touches at 150 ms", file=sys.stderr, flush=True)
            result["burst"] = burst.monday_burst(bench, args.burst, lead_in=20.0)
        if args.e2e:
            print(f"end to end: {args.e2e} leads", file=sys.stderr, flush=True)
            result["e2e"] = e2e.e2e_suite(bench, args.e2e, (0.0, 0.15), 1)
    result["elapsed_s"] = time.monotonic() - started
    report = render(result)
    print(report)
    if args.out:
        replace_section(args.out, report)
    if args.json:
        raw = json.loads(args.json.read_text()) if args.json.exists() else {}
        raw["goals"] = result
        args.json.write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
