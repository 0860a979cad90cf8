"""Benchmark 6: the Monday 09:00 burst, against a stand-in answering in 150 ms.

Touches that fell due over the weekend all come due when Monday 09:00 opens in each
lead's time zone. ``count`` leads (spread over the benchmark's time zones) are written
with their first touch due at Monday 09:00 *local*; the zones' real offsets from the
earliest one are scaled by ``zone_gap`` seconds per hour (0, the default: every zone's
09:00 at the same instant, the worst case, e.g. 100,000 leads in one zone or a backlog
after downtime). The default ``nurture worker`` (one process per CPU) sends them to the
stand-in; the clock starts at the first due time.

Measured:

* **drain time**: first due time → the stand-in's receive time of the last message;
* **lateness per lead**: receive time − that lead's due time, p50 / p95 / max;
* **order**: touches must go out in send-time order (earliest due first). A receipt is
  *overtaken* when a touch due more than ``ORDER_TOLERANCE`` seconds later was received
  before it; the share and the worst gap are reported;
* **other traffic**: during the drain, one ``lead.created`` event per second goes
  through ingest, and each probe lead is then disqualified (``lead.disqualified``, the
  shipped ``decline`` sequence); the latency of each to its enrollment (the lead's, then
  its decline's) shows whether events and declines are starved (the decline email itself
  waits hours by design, so its enrollment is what the burst could hold up);
* **exactly once**: every lead received exactly once (receipts by ``lead_id``);
* the machine's **load average** at the start and the end of the drain (the box may be
  shared).

``worker_python`` runs the worker with another interpreter (``python -m worker.cli``),
e.g. one whose path puts another checkout of the code first, to compare two versions in
the same run (:mod:`benchmarks.burst_compare`).

    python -m benchmarks.burst [--count 100000] [--latency 0.15] [--zone-gap 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from benchmarks.common import (
    PREFIX,
    ROOT,
    Bench,
    bench_world,
    percentile,
    wait_until,
)
from benchmarks.state import (
    ZONES,
    RespWriter,
    lead_event,
    lead_fields,
    lead_id,
    member_of,
    write_leads,
)
from worker.enrollment import TouchRef
from worker.events import validate_event
from worker.ingest import ingest
from worker.runtime import Runtime
from worker.store.keys import ENROLLMENT_FIELD, LEDGER_FIELD, Keys

ORDER_TOLERANCE = 1.0  # seconds: sends within this of each other may go in any order
KEYS = Keys(PREFIX)
DECLINE = "decline"  # the shipped decline sequence, added to the run's catalog


def zone_offsets(zone_gap: float) -> dict[str, float]:
    """Seconds after the earliest zone's Monday 09:00 at which each zone's 09:00 comes,
    scaled from real hours by ``zone_gap`` seconds per hour."""
    today = datetime.now(ZoneInfo("UTC")).date()
    monday = today + timedelta(days=(7 - today.weekday()) % 7 or 7)
    opens = {
        zone: datetime(monday.year, monday.month, monday.day, 9, tzinfo=ZoneInfo(zone)).timestamp()
        for zone in ZONES
    }
    first = min(opens.values())
    return {zone: (at - first) / 3600 * zone_gap for zone, at in opens.items()}


def _probe_events(
    bench: Bench, stop: threading.Event, out: list[float], declines: list[float]
) -> None:
    """One new lead per second through ingest, then its disqualification; record the
    time of each to its enrollment (the lead's first, then its decline's)."""
    runtime = Runtime(bench.settings(), load_catalog=False)
    client = bench.redis
    try:
        index = 0
        while not stop.wait(1.0):
            key = KEYS.lead(lead_id("probe", index))
            created = validate_event(lead_event("probe", index), index)
            out.append(_timed_event(runtime, created, lambda k=key: enrolled(client, k)))
            disqualified = validate_event(
                {
                    "id": f"evt-probe-decline-{index}",
                    "type": "lead.disqualified",
                    "lead": {"id": lead_id("probe", index)},
                    "data": {"reason": "budget"},
                },
                index,
            )
            declines.append(
                _timed_event(
                    runtime,
                    disqualified,
                    lambda k=key: bool(client.hexists(k, ENROLLMENT_FIELD + DECLINE)),
                )
            )
            index += 1
    finally:
        client.close()
        runtime.close()


def enrolled(client: Any, lead_key: str) -> bool:
    """Whether the lead hash holds any enrollment (an ``e:<sequence>`` field)."""
    return any(name.startswith(ENROLLMENT_FIELD.encode()) for name in client.hkeys(lead_key))


def _timed_event(runtime: Runtime, event: Any, done: Callable[[], bool]) -> float:
    """Ingest one event; seconds until ``done()`` (inf after a minute)."""
    started = time.time()
    ingest(runtime, [event])
    try:
        wait_until(done, 60, "a probe event", interval=0.01)
    except TimeoutError:
        return float("inf")
    return time.time() - started


def put_due(bench: Bench, due_of: dict[int, float]) -> None:
    """Move the burst's schedule entries to their due times (``ZADD XX``, pipelined)."""
    writer = RespWriter(bench.redis_url)
    try:
        for index, due in due_of.items():
            member = member_of("burst", index)
            shard = KEYS.schedule(KEYS.bucket(TouchRef.parse(member).lead_id))
            writer.command("ZADD", shard, "XX", repr(due), member)
            if writer.pending >= 10_000:
                writer.send()
                writer.drain()
        writer.flush()
    finally:
        writer.close()


def ledger_states(bench: Bench, count: int) -> dict[str, int]:
    """How many burst leads' first touches the ledger holds in each state (``sent``...),
    read in pipelines of 10,000 (what ``Ledger.state`` reads, one lead at a time)."""
    states: Counter[str] = Counter()
    client = bench.redis
    try:
        for start in range(0, count, 10_000):
            pipe = client.pipeline(transaction=False)
            for index in range(start, min(count, start + 10_000)):
                ref = TouchRef.parse(member_of("burst", index))
                pipe.hget(KEYS.lead(ref.lead_id), LEDGER_FIELD + ref.ledger_field)
            for raw in pipe.execute():
                states[raw.decode().split(":", 1)[0] if raw else "none"] += 1
    finally:
        client.close()
    return dict(states)


def order_check(rows: list[tuple[float, float]]) -> dict[str, float]:
    """``rows``: (received_at, due) per message. How often and by how much a touch was
    overtaken by one due more than ORDER_TOLERANCE later."""
    overtaken, worst, latest_due = 0, 0.0, float("-inf")
    for _, due in sorted(rows):
        gap = latest_due - due
        if gap > ORDER_TOLERANCE:
            overtaken += 1
            worst = max(worst, gap)
        latest_due = max(latest_due, due)
    return {
        "overtaken": overtaken,
        "overtaken_share": overtaken / max(1, len(rows)),
        "worst_s": worst,
    }


def monday_burst(
    bench: Bench,
    count: int,
    *,
    latency: float = 0.15,
    zone_gap: float = 0.0,
    lead_in: float = 3.0,
    worker_python: Path | None = None,
) -> dict[str, Any]:
    """One burst of ``count`` touches; see the module docstring for what is measured."""
    bench.flush()
    bench.standin.reset()
    bench.standin.record(False)  # receipts only: 100,000 whole messages would not fit
    bench.standin.latency(latency)
    decline = bench.sequences_dir / f"{DECLINE}.yaml"
    shutil.copyfile(ROOT / "sequences" / f"{DECLINE}.yaml", decline)
    worker = None
    probes: list[float] = []
    declines: list[float] = []
    load_start = os.getloadavg()[0]
    stop = threading.Event()
    try:
        command, env = None, None
        if worker_python is not None:
            command = [str(worker_python), "-m", "worker.cli"]
            env = bench.env()
            env.pop("PYTHONPATH")  # the run's puts this checkout first
        worker = bench.start_default_worker(env, command)
        offsets = zone_offsets(zone_gap)
        offset_of = [offsets[lead_fields("burst", index)["timezone"]] for index in range(count)]
        # Written due a day later (no scheduler claims them, however long writing takes
        # on a loaded machine), then all put at their due times in one pipelined step.
        later = time.time() + 86_400
        write_leads(bench.redis_url, "burst", range(count), lambda i: later + offset_of[i])
        first_due = time.time() + lead_in + count / 20_000
        due_of = {index: first_due + offset_of[index] for index in range(count)}
        put_due(bench, due_of)
        if time.time() > first_due:
            raise RuntimeError("writing the burst took longer than its lead-in; raise lead_in")
        prober = threading.Thread(
            target=_probe_events, args=(bench, stop, probes, declines), daemon=True
        )
        prober.start()
        last_due = max(due_of.values())
        limit = max(600.0, last_due - time.time() + count / 20)
        what = f"the stand-in to accept {count} burst messages"
        wait_until(lambda: bench.standin.accepted() >= count, limit, what, interval=0.2)

        def burst_received() -> bool:  # probe leads' own touches count in accepted()
            return (
                sum(1 for lead, _ in bench.standin.receipts() if lead.startswith("burst-")) >= count
            )

        wait_until(burst_received, 120, what, interval=1.0)
        load_end = os.getloadavg()[0]
        stop.set()
        prober.join(timeout=70)
    finally:
        stop.set()
        if worker is not None:
            bench.stop([worker])
        decline.unlink()  # other benchmarks' catalog stays as it was
        bench.standin.record(True)
    ledger = ledger_states(bench, count)
    receipts = [(lead, at) for lead, at in bench.standin.receipts() if lead.startswith("burst-")]
    seen = Counter(lead for lead, _ in receipts)
    rows = [(at, due_of[int(lead.rsplit("-", 1)[1])]) for lead, at in receipts]
    lateness = [at - due for at, due in rows]
    return {
        "touches": count,
        "latency_s": latency,
        "zone_gap_s_per_hour": zone_gap,
        "received": len(seen),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "drain_s": max(at for at, _ in rows) - first_due,
        "touches_per_s": count / max(1e-9, max(at for at, _ in rows) - first_due),
        "lateness_p50_s": percentile(lateness, 50),
        "lateness_p95_s": percentile(lateness, 95),
        "lateness_p99_s": percentile(lateness, 99),
        "lateness_max_s": max(lateness),
        "order": order_check(rows),
        "probe_events": len(probes),
        "probe_p50_s": percentile(probes, 50),
        "probe_max_s": max(probes, default=float("nan")),
        "decline_events": len(declines),
        "decline_p50_s": percentile(declines, 50),
        "decline_max_s": max(declines, default=float("nan")),
        "ledger": ledger,
        "load_start": load_start,
        "load_end": load_end,
    }


def render_burst(result: dict[str, Any]) -> str:
    """The Markdown table of one burst."""
    order = result["order"]
    return "\n".join(
        [
            "| touches | stand-in | drain | touches/s | lateness p50 / p95 / max | "
            "overtaken (> 1 s) | events during the drain: p50 / max to enrolled | "
            "declines during the drain: p50 / max to enrolled | received once | load average |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {result['touches']:,} | {result['latency_s'] * 1000:.0f} ms "
            f"| {result['drain_s']:.1f} s | {result['touches_per_s']:,.0f} "
            f"| {result['lateness_p50_s']:.1f} / {result['lateness_p95_s']:.1f} / "
            f"{result['lateness_max_s']:.1f} s "
            f"| {order['overtaken']:,} ({order['overtaken_share']:.1%}, "
            f"worst {order['worst_s']:.1f} s) "
            f"| {result['probe_p50_s']:.2f} / {result['probe_max_s']:.2f} s "
            f"({result['probe_events']}) "
            f"| {result.get('decline_p50_s', float('nan')):.2f} / "
            f"{result.get('decline_max_s', float('nan')):.2f} s "
            f"({result.get('decline_events', 0)}) "
            f"| {result['received']:,} of {result['touches']:,}, {result['duplicates']} twice; "
            f"ledger: {_ledger_text(result.get('ledger', {}))} "
            f"| {result.get('load_start', float('nan')):.1f} → "
            f"{result.get('load_end', float('nan')):.1f} |",
        ]
    )


def _ledger_text(states: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {state}" for state, n in sorted(states.items())) or "not read"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.burst", description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.15, help="stand-in latency, s")
    parser.add_argument("--zone-gap", type=float, default=0.0, help="seconds per real hour")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--worker-python", type=Path, default=None, help="run the worker with this interpreter"
    )
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nurture-bench-burst-"))
    with bench_world(workdir, 1, 8) as bench:
        result = monday_burst(
            bench,
            args.count,
            latency=args.latency,
            zone_gap=args.zone_gap,
            lead_in=5.0,
            worker_python=args.worker_python,
        )
    print(render_burst(result))
    print(json.dumps(result), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
