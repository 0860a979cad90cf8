"""Benchmark 5: the SendGrid delivery layer alone against a stand-in that answers late.

A real SendGrid account answers ``POST /v3/mail/send`` in roughly 100-300 ms. This
measures messages per second through the real :class:`SendGridDelivery` (the
``sendgrid`` library's client, our kept-alive transport, the stand-in's validation) in
the same run at several stand-in latencies, for three ways of overlapping the waiting:

``send x threads``
    Today: ``threads`` caller threads (dramatiq's 8) each calling ``send`` in turn; at
    most ``threads`` requests in flight.
``send_many (pool)``
    The same caller threads each handing batches of ``batch`` messages (a queue
    message's touches) to ``send_many``, which keeps up to ``concurrency`` requests in
    flight on a shared pool of kept-alive connections.
``httpx async (pool)``
    A prototype of the alternative: one asyncio loop with ``concurrency`` tasks posting
    the same JSON bodies through one ``httpx.AsyncClient`` (connection pool of the same
    size). Only the transport: no classification, no ledger. It is kept in the table
    because it was the other candidate: on this machine it is slower than the thread
    pool and gets slower as concurrency grows (a known httpcore pool problem:
    https://github.com/encode/httpx/issues/3215), and it would add a dependency.

Each figure is the number of accepted messages in a window of ``duration`` seconds
divided by the window (workers stop taking new messages at the end and the requests
in flight are counted when they finish). Runs alternate latencies and modes so slow
drift on a shared machine hits them all alike; medians are reported.

    python -m benchmarks.delivery [--latencies 0,50,150,300] [--duration 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import API_KEY, StandIn, median
from worker.delivery.base import Message
from worker.delivery.sendgrid import DEFAULT_CONCURRENCY, SendGridDelivery, build_payload

MODES = ("send x threads", "send_many (pool)", "httpx async (pool)")


def make_messages(count: int, tag: str) -> list[Message]:
    """``count`` realistic messages (about 2 KB of text and HTML each)."""
    text = "Hi Ann,\n\n" + "A short story about a customer like you. " * 25
    html = "<p>" + text.replace("\n", "<br>") + "</p>"
    return [
        Message(
            key=f"{tag}-{i}.bench.1.first",
            to_email=f"lead{i}@example.com",
            to_name="Ann Example",
            from_email="hello@nurture.example",
            from_name="Nurture",
            subject="A customer story",
            text=text,
            html=html,
            unsubscribe_url=f"https://nurture.example/u/{i}",
            lead_id=f"{tag}-{i}",
            sequence="bench",
            step="first",
            categories=("bench",),
        )
        for i in range(count)
    ]


def _threaded(duration: float, threads: int, work: Callable[[int], int]) -> tuple[int, float, int]:
    """Run ``work(index)`` in ``threads`` threads until ``duration`` passes; each call
    returns how many messages it got accepted. Returns (accepted, seconds, errors)."""
    deadline = time.monotonic() + duration
    accepted = [0] * threads
    errors: list[BaseException] = []

    def loop(slot: int) -> None:
        try:
            while time.monotonic() < deadline:
                accepted[slot] += work(slot)
        except BaseException as exc:  # reported by the caller, never swallowed
            errors.append(exc)

    started = time.monotonic()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"delivery benchmark failed: {errors[0]!r}") from errors[0]
    return sum(accepted), time.monotonic() - started, 0


def run_send(url: str, duration: float, threads: int, messages: Sequence[Message]) -> float:
    """Messages/s with ``threads`` threads each calling ``send`` (today's worker)."""
    delivery = SendGridDelivery(API_KEY, url, timeout=30)
    counter = itertools.count()
    try:

        def work(_slot: int) -> int:
            delivery.send(messages[next(counter) % len(messages)])
            return 1

        accepted, seconds, _ = _threaded(duration, threads, work)
    finally:
        delivery.close()
    return accepted / seconds


def run_send_many(
    url: str,
    duration: float,
    threads: int,
    batch: int,
    concurrency: int,
    messages: Sequence[Message],
) -> float:
    """Messages/s with ``threads`` threads each calling ``send_many`` on batches."""
    delivery = SendGridDelivery(API_KEY, url, timeout=30, concurrency=concurrency)
    counter = itertools.count()
    try:

        def work(_slot: int) -> int:
            start = next(counter) * batch
            chunk = [messages[(start + i) % len(messages)] for i in range(batch)]
            results = delivery.send_many(chunk)
            bad = [r for r in results if isinstance(r, Exception)]
            if bad:
                raise bad[0]
            return len(results)

        accepted, seconds, _ = _threaded(duration, threads, work)
    finally:
        delivery.close()
    return accepted / seconds


def run_httpx(url: str, duration: float, concurrency: int, messages: Sequence[Message]) -> float:
    """Messages/s with one asyncio loop, ``concurrency`` tasks, one httpx pool."""
    import httpx

    bodies = [json.dumps(build_payload(m)).encode() for m in messages]
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    async def main() -> tuple[int, float]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        counter = itertools.count()
        accepted = 0
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            deadline = time.monotonic() + duration

            async def task() -> None:
                nonlocal accepted
                while time.monotonic() < deadline:
                    body = bodies[next(counter) % len(bodies)]
                    response = await client.post("/v3/mail/send", content=body, headers=headers)
                    if response.status_code != 202:
                        raise RuntimeError(f"stand-in answered {response.status_code}")
                    accepted += 1

            started = time.monotonic()
            await asyncio.gather(*(task() for _ in range(concurrency)))
            return accepted, time.monotonic() - started

    accepted, seconds = asyncio.run(main())
    return accepted / seconds


def latency_table(
    standin: StandIn,
    latencies_ms: Sequence[int],
    *,
    duration: float,
    runs: int,
    threads: int = 8,
    batch: int = 20,
    concurrency: int = DEFAULT_CONCURRENCY,
    modes: Sequence[str] = MODES,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Messages/s per mode and stand-in latency (medians of ``runs``), same run.

    Returns:
        ``{"rows": [{"latency_ms", mode: median msg/s, ...}], "raw": {...}, settings}``.
    """
    messages = make_messages(500, "dl")
    raw: dict[str, dict[str, list[float]]] = {
        str(ms): {mode: [] for mode in modes} for ms in latencies_ms
    }
    for run in range(runs):
        for ms in latencies_ms:
            for mode in modes:
                standin.reset()  # no recorded messages pile up between windows
                standin.latency(ms / 1000)
                if mode == "send x threads":
                    rate = run_send(standin.url, duration, threads, messages)
                elif mode == "send_many (pool)":
                    rate = run_send_many(
                        standin.url, duration, threads, batch, concurrency, messages
                    )
                else:
                    rate = run_httpx(standin.url, duration, concurrency, messages)
                raw[str(ms)][mode].append(rate)
                if say:
                    say(f"delivery run {run + 1}/{runs}: {ms} ms, {mode}: {rate:.0f} msg/s")
    standin.reset()
    rows = [
        {"latency_ms": ms, **{mode: median(raw[str(ms)][mode]) for mode in modes}}
        for ms in latencies_ms
    ]
    return {
        "rows": rows,
        "raw": raw,
        "modes": list(modes),
        "threads": threads,
        "batch": batch,
        "concurrency": concurrency,
        "duration": duration,
        "runs": runs,
    }


def render_table(result: dict[str, Any]) -> str:
    """The Markdown table: one row per latency, one column per mode, and each mode's
    figure as a share of its own 0 ms figure."""
    modes = result["modes"]
    base = {mode: result["rows"][0][mode] for mode in modes}
    lines = [
        "| stand-in latency | " + " | ".join(f"{m} msg/s" for m in modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for row in result["rows"]:
        cells = [
            f"{row[m]:,.0f} ({row[m] / base[m]:.2f})" if base[m] else f"{row[m]:,.0f}"
            for m in modes
        ]
        lines.append(f"| {row['latency_ms']} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delivery", description=__doc__)
    parser.add_argument("--latencies", default="0,50,150,300", help="stand-in latencies, ms")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per figure")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    latencies = [int(v) for v in args.latencies.split(",")]
    with tempfile.TemporaryDirectory(prefix="nurture-bench-delivery-") as tmp:
        standin = StandIn(Path(tmp) / "standin.log")
        try:
            result = latency_table(
                standin,
                latencies,
                duration=args.duration,
                runs=args.runs,
                threads=args.threads,
                batch=args.batch,
                concurrency=args.concurrency,
                say=lambda m: print(m, file=sys.stderr, flush=True),
            )
        finally:
            standin.stop()
    print(render_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
