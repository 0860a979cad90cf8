"""Benchmark 1: events accepted per second, by ``POST /events`` and by ``nurture emit``.

HTTP: ``nurture serve`` (one process, as shipped) in a subprocess; C concurrent clients
(threads in this process, one keep-alive ``httpx.Client`` each; httpx's async client
costs several times more CPU per request here, as ``sniffio`` is not installed and
httpcore retries that import on every request) post signed requests
(``X-Nurture-Signature``, a fresh ``t`` per request) of one event each (a CRM
webhook) and, separately, batches of events.
An event counts once the answer is ``202`` ("durably queued"); anything else is an
error and is reported.

emit: ``nurture emit FILE`` on a JSON Lines file, timed from process start to exit,
so interpreter start-up is included (also reported on its own).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    WEBHOOK_SECRET,
    Bench,
    CpuWindow,
    nurture_command,
    percentile,
    wait_until,
)
from benchmarks.state import lead_event
from worker.actors import EVENTS_QUEUE
from worker.redis_server import free_port


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _post_all(url: str, bodies: list[bytes], concurrency: int, timeout: float) -> dict[str, Any]:
    """``concurrency`` clients (threads, one keep-alive ``httpx.Client`` each) post the
    bodies until none is left or ``timeout`` passes."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    accepted = 0
    position = 0
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def client_loop() -> None:
        nonlocal position, accepted
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    if position >= len(bodies):
                        return
                    body = bodies[position]
                    position += 1
                started = time.perf_counter()
                response = client.post(
                    f"{url}/events",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Nurture-Signature": sign(body),
                    },
                )
                took = time.perf_counter() - started
                count = int(response.json()["accepted"]) if response.status_code == 202 else 0
                with lock:
                    latencies.append(took)
                    statuses[response.status_code] += 1
                    accepted += count

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 30)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "accepted": accepted,
        "statuses": dict(statuses),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def http_runs(
    bench: Bench, requests: int, per_request: int, concurrency: int, runs: int
) -> list[dict[str, Any]]:
    """``runs`` timed runs against one ``nurture serve``; Redis emptied before each."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = bench.spawn("serve", [*nurture_command(), "serve", "--port", str(port)])
    results = []
    try:

        def up() -> bool:
            if not serve.alive():
                raise RuntimeError(f"nurture serve exited:\n{serve.tail()}")
            return _healthy(url)

        wait_until(up, 60, "nurture serve to answer /healthz", interval=0.1)
        for run in range(runs):
            bench.flush()
            tag = f"http{run}"
            bodies = []
            for r in range(requests):
                events = [lead_event(tag, r * per_request + k) for k in range(per_request)]
                doc: Any = events[0] if per_request == 1 else events
                bodies.append(json.dumps(doc).encode())
            with CpuWindow(bench, [serve]) as window:
                outcome = _post_all(
                    url, bodies, concurrency, timeout=60 + requests * per_request / 20
                )
            cpu = window.result()
            events_total = requests * per_request
            client = bench.redis
            queued = int(client.hlen(f"dramatiq:{EVENTS_QUEUE}.msgs"))
            client.close()
            results.append(
                {
                    "events": events_total,
                    "requests": requests,
                    "per_request": per_request,
                    "concurrency": concurrency,
                    "seconds": outcome["seconds"],
                    "events_per_s": outcome["accepted"] / outcome["seconds"],
                    "requests_per_s": requests / outcome["seconds"],
                    "accepted": outcome["accepted"],
                    "errors": sum(n for s, n in outcome["statuses"].items() if s != 202),
                    "statuses": outcome["statuses"],
                    "queue_messages": queued,
                    "p50_ms": outcome["p50_ms"],
                    "p99_ms": outcome["p99_ms"],
                    "server_cpu_ms": cpu["procs_cpu"] / events_total * 1000,
                    "redis_cpu_ms": cpu["redis_cpu"] / events_total * 1000,
                    "client_cpu_ms": cpu["bench_cpu"] / events_total * 1000,
                    "machine_busy_cores": cpu["machine_busy_cores"],
                    "foreign_cores": cpu["foreign_cores"],
                }
            )
    finally:
        bench.stop([serve])
    return results


def write_jsonl(path: Path, count: int, tag: str = "emit") -> Path:
    """A JSON Lines file of ``count`` lead.created events."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            handle.write(json.dumps(lead_event(tag, index)) + "\n")
    return path


def _emit(bench: Bench, path: Path, name: str) -> tuple[float, str, dict[str, float]]:
    started = time.perf_counter()
    proc = bench.spawn(name, [*nurture_command(), "emit", str(path)])
    with CpuWindow(bench, []) as window:
        # The emit process's own CPU comes from its rusage at exit.
        _, status, usage = os.wait4(proc.popen.pid, 0)
        proc.popen.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    bench.procs.remove(proc)
    if proc.popen.returncode != 0:
        raise RuntimeError(f"nurture emit failed:\n{proc.tail()}")
    return seconds, proc.tail(300), window.result(extra_cpu=usage.ru_utime + usage.ru_stime)


def emit_runs(bench: Bench, count: int, runs: int) -> list[dict[str, Any]]:
    """``runs`` timed ``nurture emit`` runs of a ``count``-event file (Redis emptied
    before each), and the start-up cost measured on a one-event file."""
    path = write_jsonl(bench.workdir / f"events-{count}.jsonl", count)
    one = write_jsonl(bench.workdir / "events-1.jsonl", 1, tag="startup")
    results = []
    for _ in range(runs):
        bench.flush()
        startup, _, _ = _emit(bench, one, "emit-startup")
        bench.flush()
        seconds, output, cpu = _emit(bench, path, "emit")
        if f"queued {count} event(s)" not in output:
            raise RuntimeError(f"nurture emit did not queue {count} events: {output!r}")
        client = bench.redis
        queued = int(client.hlen(f"dramatiq:{EVENTS_QUEUE}.msgs"))
        client.close()
        results.append(
            {
                "events": count,
                "seconds": seconds,
                "events_per_s": count / seconds,
                "startup_seconds": startup,
                "events_per_s_after_startup": count / max(1e-9, seconds - startup),
                "queue_messages": queued,
                "expected_messages": math.ceil(count / 100),
                "emit_cpu_ms": cpu["procs_cpu"] / count * 1000,
                "redis_cpu_ms": cpu["redis_cpu"] / count * 1000,
                "machine_busy_cores": cpu["machine_busy_cores"],
                "foreign_cores": cpu["foreign_cores"],
            }
        )
    return results
