"""Where a touch's time goes.

Two independent views:

* **py-spy** on real ``nurture worker`` processes during a pipeline run (one worker
  sampled wall-clock with ``--idle``, the other only while a thread holds the GIL, i.e.
  runs Python), summarised from py-spy's raw (collapsed-stack) output:
  :func:`summarise_wall` and :func:`summarise_cpu`.
* **An exact anatomy** of the send path (:func:`touch_anatomy`): the real
  ``TouchSender`` in this process, one thread, with every Redis round trip and every
  TCP connect to the SendGrid stand-in counted and attributed to the worker function
  that caused it, and every call the sender makes timed (wall and CPU). Plus two
  measured what-ifs for the suggestions: the cost of one Redis round trip, and a
  SendGrid request over a fresh connection versus a kept-alive one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.connection import AbstractConnection

from benchmarks.common import API_KEY, Bench
from benchmarks.state import write_leads
from worker.delivery import Message
from worker.delivery.sendgrid import build_payload
from worker.runtime import Runtime
from worker.sending import Touch

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    @property
    def label(self) -> str:
        return f"{self.func} ({self.file})"


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[Frame, ...]  # outermost first
    count: int


def parse_raw(path: Path) -> list[Stack]:
    """Read py-spy's ``--format raw`` output (``thread;frame;...;frame count``)."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        parts = body.split(";")
        frames = []
        for part in parts[1:]:
            match = _FRAME.match(part)
            if match:
                frames.append(Frame(match["func"], match["file"]))
            else:
                frames.append(Frame(part, ""))
        stacks.append(Stack(parts[0], tuple(frames), int(count)))
    return stacks


def role(stack: Stack) -> str:
    """What the sampled thread is: a dramatiq worker thread, consumer, the scheduler..."""
    funcs = " ".join(f.func for f in stack.frames)
    if not stack.frames:
        return "no Python frame (interpreter, GC, native)"
    if any(f.file.startswith("<frozen importlib") for f in stack.frames):
        return "start-up (imports)"
    if "WorkerThread.run" in funcs:
        return "dramatiq worker threads"
    if "ConsumerThread.run" in funcs:
        return "dramatiq consumer threads"
    if "Scheduler.run" in funcs:
        return "scheduler thread"
    if "run_worker" in funcs or "cmd_worker" in funcs:
        return "main thread (start, live reload, stop)"
    return "other threads"


def category(frames: tuple[Frame, ...]) -> str:
    """The subsystem a sample is in (first match, most specific first)."""
    files = [f.file for f in frames]

    def has(*needles: str) -> bool:
        return any(n in file for file in files for n in needles)

    if has("redis/"):
        return "Redis (redis-py: pack, send, wait, parse)"
    if has("python_http_client/", "urllib/", "http/client.py", "sendgrid/"):
        return "SendGrid HTTP (urllib: connect, send, wait, read)"
    if has("jinja2/", "markupsafe/", "worker/rendering/", "worker/content.py"):
        return "rendering (Jinja2, content library)"
    if has("json/"):
        return "JSON"
    if has("pydantic"):
        return "pydantic"
    if has("dramatiq/"):
        return "dramatiq"
    if has("worker/"):
        return "worker code (own Python)"
    return "other (stdlib, interpreter)"


def _short(frame: Frame) -> str:
    module = frame.file.removesuffix(".py").replace("/", ".")
    return f"{module}:{frame.func}"


def callee_of_sender(frames: tuple[Frame, ...]) -> str:
    """The function ``worker/sending.py`` called that this sample is inside."""
    last = -1
    for index, frame in enumerate(frames):
        if frame.file.endswith("worker/sending.py"):
            last = index
    if last == -1:
        return "(outside TouchSender)"
    if last == len(frames) - 1:
        return f"{_short(frames[last])} (own code)"
    return _short(frames[last + 1])


def summarise_wall(stacks: list[Stack]) -> dict[str, Any]:
    """Wall-clock view of one worker process (sampled with ``--idle``)."""
    by_role: Counter[str] = Counter()
    worker_state: Counter[str] = Counter()
    in_touch: Counter[str] = Counter()
    in_touch_category: Counter[str] = Counter()
    for stack in stacks:
        who = role(stack)
        by_role[who] += stack.count
        if who != "dramatiq worker threads":
            continue
        if any(f.func.endswith("send_touches") for f in stack.frames):
            worker_state["processing touches (inside send_touches)"] += stack.count
            in_touch[callee_of_sender(stack.frames)] += stack.count
            in_touch_category[category(stack.frames)] += stack.count
        elif any("get" in f.func and "queue" in f.file for f in stack.frames[-3:]):
            worker_state["idle: waiting for a message"] += stack.count
        else:
            worker_state["dramatiq message handling (outside the actor)"] += stack.count
    return {
        "samples": sum(by_role.values()),
        "roles": dict(by_role.most_common()),
        "worker_state": dict(worker_state.most_common()),
        "touch_callees": dict(in_touch.most_common()),
        "touch_categories": dict(in_touch_category.most_common()),
    }


def summarise_cpu(stacks: list[Stack]) -> dict[str, Any]:
    """Python-CPU view of one worker process (sampled with ``--gil``: only the thread
    holding the GIL, so blocking I/O and GIL waits are left out)."""
    by_role: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    highlights: Counter[str] = Counter()
    for stack in stacks:
        by_role[role(stack)] += stack.count
        by_category[category(stack.frames)] += stack.count
        if stack.frames:
            self_time[stack.frames[-1].label] += stack.count
        for name, matches in HIGHLIGHTS.items():
            if matches(stack.frames):
                highlights[name] += stack.count
    return {
        "samples": sum(by_role.values()),
        "roles": dict(by_role.most_common()),
        "categories": dict(by_category.most_common()),
        "top_self": dict(self_time.most_common(12)),
        "highlights": {name: highlights[name] for name in HIGHLIGHTS},
    }


def _calls(func: str, file: str = "") -> Callable[[tuple[Frame, ...]], bool]:
    def matches(frames: tuple[Frame, ...]) -> bool:
        return any(f.func == func and file in f.file for f in frames)

    return matches


# Specific costs the suggestions cite: share of the GIL-holding samples inside them.
HIGHLIGHTS: dict[str, Callable[[tuple[Frame, ...]], bool]] = {
    "urllib build_opener() per request": _calls("build_opener", "urllib/request.py"),
    "urllib proxy settings read from the environment per request": _calls(
        "getproxies_environment", "urllib/request.py"
    ),
    "opening the TCP connection (connect, getaddrinfo)": _calls("create_connection", "socket"),
    "redis-py, all commands": lambda frames: any("redis/" in f.file for f in frames),
    "Jinja2 rendering": lambda frames: any(
        "jinja2/" in f.file or "worker/rendering/" in f.file for f in frames
    ),
}


# -- the exact anatomy of one touch ----------------------------------------------------


def _worker_caller(skip: int = 2) -> str:
    """The innermost worker-package function on the current stack."""
    frame = sys._getframe(skip)
    while frame is not None:
        filename = frame.f_code.co_filename
        if "/worker/" in filename and "/site-packages/" not in filename:
            module = filename.rsplit("/worker/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"worker.{module}:{frame.f_code.co_qualname}"
        frame = frame.f_back  # type: ignore[assignment]
    return "(outside worker)"


@contextlib.contextmanager
def _counting() -> Iterator[tuple[Counter[str], Counter[str]]]:
    """Count Redis round trips and HTTP connects, by the worker function causing them."""
    round_trips: Counter[str] = Counter()
    connects: Counter[str] = Counter()
    send_packed: Callable[..., Any] = AbstractConnection.send_packed_command
    connect = http.client.HTTPConnection.connect

    def counted_send(self: Any, command: Any, check_health: bool = True) -> Any:
        round_trips[_worker_caller()] += 1
        return send_packed(self, command, check_health)

    def counted_connect(self: Any) -> Any:
        connects[_worker_caller()] += 1
        return connect(self)

    AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    http.client.HTTPConnection.connect = counted_connect  # type: ignore[method-assign]
    try:
        yield round_trips, connects
    finally:
        AbstractConnection.send_packed_command = send_packed  # type: ignore[method-assign]
        http.client.HTTPConnection.connect = connect  # type: ignore[method-assign]


class _Timings:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.wall: defaultdict[str, float] = defaultdict(float)
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = self.depth == 0
            self.depth += 1
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                self.depth -= 1
                if outer:  # nested timed calls count in their caller only
                    self.calls[name] += 1
                    self.wall[name] += time.perf_counter() - wall
                    self.cpu[name] += time.thread_time() - cpu

        return timed


#: (part of the store, method) the sender calls, timed per call.
STORE_CALLS = (
    ("enrolled", "touch_state"),
    ("enrolled", "all"),
    ("leads", "get"),
    ("leads", "lock"),
    ("leads", "mark_held"),
    ("leads", "drop_held"),
    ("ledger", "reserve"),
    ("ledger", "advance"),
    ("ledger", "release"),
    ("ledger", "record_unknown"),
    ("counters", "count"),
    ("schedule", "release_claim"),
    ("schedule", "reschedule"),
    ("schedule", "due_at"),
    ("schedule", "due_or_claimed"),
    ("dead", "add"),
)


def touch_anatomy(bench: Bench, count: int = 300, warmup: int = 20) -> dict[str, Any]:
    """Send ``count`` due touches with the real ``TouchSender`` in this process, one
    thread, counting and timing everything it does per touch."""
    bench.flush()
    bench.standin.reset()
    write_leads(bench.redis_url, "anat", range(count + warmup), lambda i: time.time() - 1)
    runtime = Runtime(bench.settings())
    try:
        claimed = runtime.store.claim_due(time.time(), count + warmup, 300)
        touches = [Touch(member, due) for member, due in claimed]
        sender = runtime.sender
        sender.send_batch(touches[:warmup])  # connections, Lua scripts, template cache
        timings = _Timings()
        store = runtime.store
        for part_name, name in STORE_CALLS:
            part = getattr(store, part_name)
            # Named like the round-trip counter names them (class qualname), so they match.
            label = f"{type(part).__qualname__}.{name}"
            setattr(part, name, timings.wrap(label, getattr(part, name)))
        delivery = runtime.delivery
        setattr(delivery, "send", timings.wrap("SendGridDelivery.send", delivery.send))  # noqa: B010
        renderer = runtime.catalog.current.renderer
        setattr(renderer, "render", timings.wrap("Renderer.render", renderer.render))  # noqa: B010
        setattr(  # noqa: B010
            runtime, "unsubscribe_url", timings.wrap("unsubscribe_url", runtime.unsubscribe_url)
        )
        measured = touches[warmup:]
        with _counting() as (round_trips, connects):
            wall, cpu = time.perf_counter(), time.thread_time()
            outcomes = sender.send_batch(measured)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        n = len(measured)
        rows = []
        for name in sorted(timings.calls, key=lambda k: -timings.wall[k]):
            rows.append(
                {
                    "call": name,
                    "calls": timings.calls[name] / n,
                    "wall_ms": timings.wall[name] / n * 1000,
                    "cpu_ms": timings.cpu[name] / n * 1000,
                }
            )
        accounted_wall = sum(timings.wall.values())
        accounted_cpu = sum(timings.cpu.values())
        rows.append(
            {
                "call": "TouchSender itself (checks, context, Message, bookkeeping)",
                "calls": 1.0,
                "wall_ms": (wall - accounted_wall) / n * 1000,
                "cpu_ms": (cpu - accounted_cpu) / n * 1000,
            }
        )
        return {
            "touches": n,
            "outcomes": outcomes,
            "wall_ms": wall / n * 1000,
            "cpu_ms": cpu / n * 1000,
            "rows": rows,
            "round_trips": {k: v / n for k, v in round_trips.most_common()},
            "round_trips_total": sum(round_trips.values()) / n,
            "connects": {k: v / n for k, v in connects.most_common()},
            "connects_total": sum(connects.values()) / n,
        }
    finally:
        runtime.close()
        bench.flush()


def redis_round_trip_cost(bench: Bench, calls: int = 3000) -> dict[str, float]:
    """Client-side wall and CPU of one trivial redis-py round trip (HGET of a missing
    field), and of the same reads sent as one pipeline of three."""
    client = redis.Redis.from_url(bench.redis_url)
    try:
        for _ in range(100):
            client.hget("bench:none", "x")
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            client.hget("bench:none", "x")
        single_wall, single_cpu = time.perf_counter() - wall, time.thread_time() - cpu
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls // 3):
            pipe = client.pipeline(transaction=False)
            pipe.hget("bench:none", "x")
            pipe.hget("bench:none", "y")
            pipe.hget("bench:none", "z")
            pipe.execute()
        piped_wall, piped_cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        client.close()
    return {
        "wall_ms": single_wall / calls * 1000,
        "cpu_ms": single_cpu / calls * 1000,
        "three_piped_wall_ms": piped_wall / (calls // 3) * 1000,
        "three_piped_cpu_ms": piped_cpu / (calls // 3) * 1000,
    }


def keepalive_comparison(bench: Bench, requests: int = 300) -> dict[str, float]:
    """One rendered-size Mail Send request to the stand-in: through ``SendGridDelivery``
    (the official library on urllib, a new TCP connection per request) versus the same
    body on one kept-alive ``http.client`` connection. Client wall and CPU per request,
    and the stand-in's CPU per request for each."""
    message = Message(
        key="bench.1.first.lead",
        to_email="ann@example.com",
        to_name="Ann Berg",
        from_email="hello@nurture.example",
        from_name="Nurture Team",
        subject="The one number worth moving first",
        text="Hi Ann,\n\n" + "Some useful words. " * 80,
        html="<p>Hi Ann,</p>" + "<p>Some useful words.</p>" * 80,
        unsubscribe_url="https://nurture.example/unsubscribe/token",
        lead_id="lead",
        sequence="bench",
        step="first",
        categories=("bench",),
    )
    runtime = Runtime(bench.settings(), load_catalog=False)
    try:
        delivery = runtime.delivery
        for _ in range(20):
            delivery.send(message)
        stand_cpu = bench.standin.cpu()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(requests):
            delivery.send(message)
        fresh = (time.perf_counter() - wall, time.thread_time() - cpu)
        fresh_stand = bench.standin.cpu() - stand_cpu
    finally:
        runtime.close()
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    connection = http.client.HTTPConnection("127.0.0.1", bench.standin.port, timeout=10)
    try:
        for _ in range(20):
            body = json.dumps(build_payload(message)).encode()
            connection.request("POST", "/v3/mail/send", body, headers)
            connection.getresponse().read()
        stand_cpu = bench.standin.cpu()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(requests):
            # The same work per message as SendGridDelivery.send minus the new connection:
            # build the payload, encode it, one request on the kept-alive connection.
            body = json.dumps(build_payload(message)).encode()
            connection.request("POST", "/v3/mail/send", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 202:
                raise RuntimeError(f"stand-in answered {response.status}")
        kept = (time.perf_counter() - wall, time.thread_time() - cpu)
        kept_stand = bench.standin.cpu() - stand_cpu
    finally:
        connection.close()
    bench.standin.reset()
    return {
        "fresh_wall_ms": fresh[0] / requests * 1000,
        "fresh_cpu_ms": fresh[1] / requests * 1000,
        "fresh_standin_cpu_ms": fresh_stand / requests * 1000,
        "kept_wall_ms": kept[0] / requests * 1000,
        "kept_cpu_ms": kept[1] / requests * 1000,
        "kept_standin_cpu_ms": kept_stand / requests * 1000,
    }
