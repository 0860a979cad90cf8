"""The shape of the load on a Redis Cluster: per-primary commands per sent touch and the
busiest key's share, with 1, 2 and 3 primaries.

Each run starts a cluster on loopback ports (tests/cluster.py), runs the shipped
example leads (x ``--copies``) through the real pipeline with the state on the cluster
(``NURTURE_REDIS_CLUSTER``), moves a manual clock through every sequence to its end, and
counts every command each primary executes with ``MONITOR`` (commands a Lua script runs
count one by one; the EVALSHA itself does not). The queues are never on the cluster:
with ``--broker-url`` they are on that RabbitMQ and real dramatiq workers run them,
else dramatiq's stub broker runs them inline.

The scheduler's ticks cost the same whether anything is due or not: each shard's
``claim_due`` scans its claims and its schedule (two ZRANGEBYSCORE), and once a second
each shard's parked touches are counted (ZCARD). Those fixed scans are measured apart,
on idle ticks (reported per tick), and left out of the per-touch figures; the busiest
keys are given of all commands and of the sends' commands (fixed scans apart).

:func:`measure` is the measurement; tests/scale/test_cluster_shape.py runs it on every
test run and checks the shape.

    python -m benchmarks.cluster_shape --copies 50 --json /tmp/shape.json \
        [--broker-url amqp://guest:guest@127.0.0.1:5672/<empty vhost>]
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
from tests.cluster import ClusterProcess, start_cluster
from tests.harness import Harness
from worker.clock import ManualClock
from worker.events import validate_event
from worker.runtime import Runtime

IDLE_TICKS = 50
#: The schedulers' scans that cost the same whatever is due (counted per tick, apart).
FIXED_SCANS = ("ZRANGEBYSCORE", "ZCARD")


def _taps(ports: list[int]) -> list[CommandTap]:
    taps = [CommandTap(f"redis://127.0.0.1:{port}/0") for port in ports]
    for tap in taps:
        tap.start()
    return taps


def _stop(taps: list[CommandTap]) -> None:
    for tap in taps:
        tap.stop()


def measure(
    cluster: ClusterProcess,
    copies: int,
    work: Path,
    *,
    broker_url: str | None = None,
    threads: int = 4,
) -> dict[str, Any]:
    """Run the example leads ×``copies`` through the pipeline with the state on
    ``cluster`` (emptied first: it is ours) and count every command per primary.

    With ``broker_url`` (RabbitMQ) the queues are there and real dramatiq workers
    (``threads`` of them) run the messages; without, dramatiq's ``StubBroker`` runs them
    inline. Either way no queue key is on the cluster, so every command counted is the
    state's.
    """
    cluster.flush()
    clock = ManualClock(MONDAY_9AM)
    settings = example_settings(cluster.url, work, redis_cluster=True, broker_url=broker_url)
    broker = None if broker_url else StubBroker()  # type: ignore[no-untyped-call]
    runtime = Runtime(settings, clock=clock, broker=broker)
    harness = Harness(runtime, clock, settings.outbox_dir)
    try:
        runtime.check_redis()
        harness.start(threads)
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
        sent = harness.sent()
    finally:
        harness.stop()
        runtime.close()
    return shape_of(taps, len(events), sent, ticks, idle)


def shape_of(
    taps: list[CommandTap],
    leads: int,
    sent: list[tuple[str, str, str]],
    ticks: int,
    idle: list[float],
) -> dict[str, Any]:
    """The figures of one run from its per-primary command taps (``sent``: lead,
    sequence and step of every email out)."""
    keys: Counter[str] = Counter()
    moving_keys: Counter[str] = Counter()  # the sends' commands: fixed scans apart
    for tap in taps:
        keys.update(tap.keys)
        for (name, key), calls in tap.calls.items():
            if name not in FIXED_SCANS:
                moving_keys[key] += calls
    total = sum(tap.total for tap in taps)
    moving = [tap.total - sum(tap.commands[name] for name in FIXED_SCANS) for tap in taps]
    count = len(sent)
    return {
        "primaries": len(taps),
        "leads": leads,
        "sent": count,
        "sent_twice": count - len(set(sent)),
        "ticks": ticks,
        "per_tick": [round(x, 1) for x in idle],
        "per_touch": [round(x / max(count, 1), 2) for x in moving],
        "per_touch_total": round(sum(moving) / max(count, 1), 2),
        # Each primary's part of the commands the sends made (the fixed scans apart).
        "per_touch_share": [round(x / max(sum(moving), 1), 4) for x in moving],
        "all_commands": total,
        "busiest_keys": _shares(keys, total),
        "busiest_keys_of_sends": _shares(moving_keys, sum(moving)),
    }


def _shares(keys: Counter[str], total: int) -> list[dict[str, Any]]:
    return [
        {"key": key.replace("\x1f", "|"), "share": round(calls / max(total, 1), 4)}
        for key, calls in keys.most_common(5)
    ]


def run(primaries: int, copies: int, broker_url: str | None = None) -> dict[str, Any]:
    """One cluster of ``primaries``, started for the run: :func:`measure` on it."""
    work = Path(tempfile.mkdtemp(prefix=f"cluster-shape-{primaries}-"))
    cluster = start_cluster(work / "cluster", primaries)
    try:
        return measure(cluster, copies, work, broker_url=broker_url)
    finally:
        cluster.stop()


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| primaries | leads | sends | commands per sent touch, per primary | total | "
        "per idle tick, per primary | busiest key (share of all commands) | "
        "busiest key of the sends' commands |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        top, top_of_sends = r["busiest_keys"][0], r["busiest_keys_of_sends"][0]
        lines.append(
            f"| {r['primaries']} | {r['leads']} | {r['sent']} | "
            f"{' / '.join(f'{x:.1f}' for x in r['per_touch'])} | {r['per_touch_total']:.1f} | "
            f"{' / '.join(f'{x:.0f}' for x in r['per_tick'])} | "
            f"`{top['key']}` {top['share']:.2%} | "
            f"`{top_of_sends['key']}` {top_of_sends['share']:.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--primaries", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--broker-url",
        help="queues on this RabbitMQ (an empty vhost of its own), real dramatiq workers",
    )
    args = parser.parse_args()
    results = [run(n, args.copies, args.broker_url) for n in args.primaries]
    print(report(results))
    for r in results:
        print(r["primaries"], "busiest:", r["busiest_keys"])
        print(r["primaries"], "busiest of the sends:", r["busiest_keys_of_sends"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
