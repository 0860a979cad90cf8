"""The shape of the load on a Redis Cluster: per-primary commands per sent touch and the
busiest key's share, with 1, 2 and 3 primaries.

Each run starts a cluster on loopback ports (tests/cluster.py), runs the shipped
example leads (x ``--copies``) through the real pipeline with the state on the cluster
(``NURTURE_REDIS_CLUSTER``) and the queues elsewhere (dramatiq's stub broker, as with
RabbitMQ: dramatiq's keys are not on the cluster), moves a manual clock through every
sequence to its end, and counts every command each primary executes with ``MONITOR``
(commands a Lua script runs count one by one; the EVALSHA itself does not).

The scheduler's ticks cost the same whether anything is due or not: each shard's
``claim_due`` scans its claims and its schedule (two ZRANGEBYSCORE), and once a second
each shard's parked touches are counted (ZCARD). Those fixed scans are measured apart,
on idle ticks (reported per tick), and left out of the per-touch figures.

    python -m benchmarks.cluster_shape --copies 50 --json /tmp/shape.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from dramatiq.brokers.stub import StubBroker

from benchmarks.lead_memory import MONDAY_9AM, CommandTap, example_events, example_settings
from tests.cluster import start_cluster
from tests.harness import Harness
from worker.clock import ManualClock
from worker.events import validate_event
from worker.runtime import Runtime

IDLE_TICKS = 50


def _taps(ports: list[int]) -> list[CommandTap]:
    taps = [CommandTap(f"redis://127.0.0.1:{port}/0") for port in ports]
    for tap in taps:
        tap.start()
    return taps


def _stop(taps: list[CommandTap]) -> None:
    for tap in taps:
        tap.stop()


def run(primaries: int, copies: int) -> dict[str, Any]:
    """One cluster of ``primaries``: commands per primary, per sent touch and per tick."""
    work = Path(tempfile.mkdtemp(prefix=f"cluster-shape-{primaries}-"))
    cluster = start_cluster(work / "cluster", primaries)
    clock = ManualClock(MONDAY_9AM)
    settings = example_settings(cluster.url, work, redis_cluster=True)
    runtime = Runtime(settings, clock=clock, broker=StubBroker())  # type: ignore[no-untyped-call]
    harness = Harness(runtime, clock, settings.outbox_dir)
    try:
        runtime.check_redis()
        events = [validate_event(doc) for doc in example_events(copies)]
        for i in range(0, len(events), 100):
            harness.emit(*events[i : i + 100])
        harness.settle(timeout=300)
        # Idle ticks: nothing is due for ten minutes after the enrollments.
        taps = _taps(cluster.ports)
        for _ in range(IDLE_TICKS):
            harness.scheduler.tick()
        _stop(taps)
        idle = [tap.total / IDLE_TICKS for tap in taps]
        ticks_before = harness.scheduler._ticks
        taps = _taps(cluster.ports)
        harness.run_until((MONDAY_9AM + timedelta(days=120)).timestamp())
        _stop(taps)
        ticks = harness.scheduler._ticks - ticks_before
        sent = len(list(settings.outbox_dir.glob("*.eml")))
        keys: Counter[str] = Counter()
        for tap in taps:
            keys.update(tap.keys)
        total = sum(tap.total for tap in taps)
        fixed = ("ZRANGEBYSCORE", "ZCARD")
        per_touch = [
            (tap.total - sum(tap.commands[name] for name in fixed)) / max(sent, 1) for tap in taps
        ]
        return {
            "primaries": primaries,
            "leads": len(events),
            "sent": sent,
            "ticks": ticks,
            "per_tick": [round(x, 1) for x in idle],
            "per_touch": [round(x, 2) for x in per_touch],
            "per_touch_total": round(sum(per_touch), 2),
            "all_commands": total,
            "busiest_keys": [
                {"key": key.replace("\x1f", "|"), "share": round(calls / max(total, 1), 4)}
                for key, calls in keys.most_common(5)
            ],
        }
    finally:
        runtime.close()
        cluster.stop()


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| primaries | leads | sends | commands per sent touch, per primary | total | "
        "per idle tick, per primary | busiest key (share of all commands) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        top = r["busiest_keys"][0]
        lines.append(
            f"| {r['primaries']} | {r['leads']} | {r['sent']} | "
            f"{' / '.join(f'{x:.1f}' for x in r['per_touch'])} | {r['per_touch_total']:.1f} | "
            f"{' / '.join(f'{x:.0f}' for x in r['per_tick'])} | "
            f"`{top['key']}` {top['share']:.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--primaries", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [run(n, args.copies) for n in args.primaries]
    print(report(results))
    for r in results:
        print(r["primaries"], "busiest:", r["busiest_keys"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
