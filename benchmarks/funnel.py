"""``nurture report`` at N leads: the per-day counters against the leads' timelines.

N leads' facts (enrolled, sent, SendGrid's delivered/open/click, replies) spread over 30
days are written to a private ``redis-server`` in the stored formats (timeline entries
with :func:`~worker.store.timeline.entry`, day fields with
:func:`~worker.store.counters.day_fields`), pipelined; then both report paths are timed,
and their results must be equal (the run fails otherwise).

Command: ``python -m benchmarks.funnel --leads 100000``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from worker import report
from worker.redis_server import start_redis
from worker.store import Store
from worker.store.counters import day_fields, report_groups
from worker.store.keys import DATA_FIELD
from worker.store.timeline import Kind, add_to, entry

SEQUENCE = "value-first"
STEPS = ("outcome-story", "case-study", "checklist")
DAY = 86_400.0
START = 1_795_000_000.0  # 2026-11-18
LOCALES = ("en", "da", "fi")
SOURCES = ("website", "outbound")


def _lead_facts(rng: random.Random, index: int) -> list[tuple[Kind, float, dict[str, Any]]]:
    """One lead's timeline: enrolled, its touches, SendGrid's reports, maybe a reply."""
    at = START + (index % 30) * DAY + rng.random() * 3600
    facts: list[tuple[Kind, float, dict[str, Any]]] = [
        (Kind.ENROLLED, at, {"sequence": SEQUENCE, "step": STEPS[0], "due": at})
    ]
    last = "-"
    for step in STEPS[: 1 + int(rng.random() * 3)]:
        at += 2 * DAY
        last = step
        facts.append((Kind.TOUCH, at, {"sequence": SEQUENCE, "step": step, "outcome": "sent"}))
        base = {"sequence": SEQUENCE, "step": step}
        roll = rng.random()
        facts.append((Kind.PROVIDER, at + 5, {**base, "event": "delivered"}))
        if roll < 0.5:
            facts += [(Kind.PROVIDER, at + 60 + n, {**base, "event": "open"}) for n in range(2)]
        if roll < 0.2:
            facts.append((Kind.PROVIDER, at + 90, {**base, "event": "click"}))
    if rng.random() < 0.05:
        facts.append(
            (Kind.EXITED, at + 3600, {"sequence": SEQUENCE, "reason": "exit_on:lead.replied"})
        )
    return [(kind, when, {**data, "_last": last}) for kind, when, data in facts]


def _column(kind: Kind, data: dict[str, Any]) -> tuple[str, str] | None:
    """(step, column) a fact counts in, as the hot path counts it."""
    if kind is Kind.ENROLLED:
        return data["step"], "enrolled"
    if kind is Kind.TOUCH:
        return data["step"], "sent"
    if kind is Kind.PROVIDER:
        column = report.provider_column(data["event"])
        return (data["step"], column) if column else None
    column = report.exit_column(data["reason"])
    return (data["_last"], column) if column else None


def write(store: Store, leads: int, seed: int = 7) -> None:
    """Write N leads' records, timelines and day counters, pipelined."""
    rng = random.Random(seed)
    stats = store.keys.stats(SEQUENCE)
    pipe = store.redis.pipeline(transaction=False)
    pipe.sadd(store.keys.stats_index, SEQUENCE)
    for index in range(leads):
        lead_id = f"B{index}"
        data = {"locale": LOCALES[index % 3], "source": SOURCES[index % 2]}
        # The lead record as LeadStore.save writes it (pipelined here: 100,000 leads).
        pipe.hset(store.keys.lead(lead_id), DATA_FIELD, json.dumps({"id": lead_id, **data}))
        entries, seen = [], set()
        for kind, at, fact in _lead_facts(rng, index):
            entries.append(entry(kind, at, **{k: v for k, v in fact.items() if k != "_last"}))
            counted = _column(kind, fact)
            if counted is None or (kind is Kind.PROVIDER and counted in seen):
                continue  # a second open of one email is not a second "opened"
            seen.add(counted)
            for name in day_fields(at, *counted, report_groups(data)):
                pipe.hincrby(stats, name, 1)
        add_to(pipe, store.keys, lead_id, entries)
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


def timed(build: Callable[..., dict[str, Any]], store: Store, filters: report.Filters) -> Any:
    started = time.perf_counter()
    data = build(store, [SEQUENCE], filters)
    return time.perf_counter() - started, data


def run(leads: int, repeats: int = 3) -> dict[str, Any]:
    """Time both report paths over N leads; their results must be equal."""
    with tempfile.TemporaryDirectory() as folder:
        server = start_redis(Path(folder), appendonly=False)
        try:
            client = redis.Redis.from_url(server.url)
            store = Store(client, prefix="bench")
            started = time.perf_counter()
            write(store, leads)
            wrote = time.perf_counter() - started
            out: dict[str, Any] = {"leads": leads, "write_seconds": wrote}
            fields = client.hlen(store.keys.stats(SEQUENCE))
            out["day_fields"] = fields
            for name, filters in (
                ("all", report.Filters()),
                ("by locale", report.Filters(by="locale")),
                ("7 days", report.Filters(since=START + 7 * DAY - START % DAY, until=None)),
            ):
                exact_s, exact = timed(report.build_exact, store, filters)
                runs = [timed(report.build_report, store, filters) for _ in range(repeats)]
                if any(data != exact for _seconds, data in runs):
                    raise SystemExit(f"{name}: the counters and the timelines disagree")
                out[name] = {"exact": exact_s, "counters": min(s for s, _ in runs)}
            return out
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    args = parser.parse_args()
    result = run(args.leads)
    print(f"{result['leads']:,} leads; {result['day_fields']:,} fields in the stats hash")
    print("| report | timelines (--exact) | per-day counters |")
    print("|---|---|---|")
    for name in ("all", "by locale", "7 days"):
        times = result[name]
        print(f"| {name} | {times['exact']:.2f} s | {times['counters'] * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
