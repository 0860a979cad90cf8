"""Lead state for the benchmarks, made two ways.

* :func:`preload_real` sends ``lead.created`` events through the real pipeline:
  ``ingest()`` (replay guard, queue) and the real ``process_events`` actor on dramatiq
  workers, which store the lead and enroll it (the first touch lands in the schedule).
* :func:`write_leads` writes the same keys directly with pipelined commands, batch by
  batch: the only way to put a million leads in place in seconds. It mirrors exactly
  what enrollment writes; :func:`check_fidelity` proves it by comparing both, key by
  key, field by field and byte for byte (``MEMORY USAGE``), for a few leads.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlparse

import dramatiq
import redis

from benchmarks.common import FIRST_STEP, PREFIX, SEQUENCE_ID, Bench, wait_until
from worker.actors import EVENTS_QUEUE
from worker.enrollment import Enrollment, EnrollmentState, touch_id
from worker.events import validate_event
from worker.ingest import ingest
from worker.runtime import Runtime
from worker.store import EVENT_DEDUP_SECONDS, Store
from worker.store.enrollments import pack_enrollment
from worker.store.keys import DATA_FIELD, ENROLLMENT_FIELD, Keys
from worker.store.leads import CONTACTABLE, FIELD_TIMES, SEEN, pack_data, pack_flag
from worker.store.timeline import TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS, Kind
from worker.store.timeline import batch as timeline_batch

KEYS = Keys(PREFIX)
ZONES = ("Europe/Copenhagen", "Europe/Helsinki", "America/New_York", "UTC")
INDUSTRIES = ("saas", "agency", "retail", "manufacturing")


def lead_id(tag: str, index: int) -> str:
    return f"{tag}-{index:07d}"


def event_id(tag: str, index: int) -> str:
    return f"evt-{tag}-{index}"


def lead_fields(tag: str, index: int) -> dict[str, Any]:
    """The lead of a ``lead.created`` event, in the order ``merge_lead`` stores it."""
    return {
        "id": lead_id(tag, index),
        "email": f"{tag}.{index}@example.com",
        "first_name": "Ann",
        "last_name": "Berg",
        "company": "Berg ApS",
        "locale": "en",
        "timezone": ZONES[index % len(ZONES)],
        "source": "web",
        "attributes": {"industry": INDUSTRIES[index % len(INDUSTRIES)], "budget": 2000},
    }


def lead_event(tag: str, index: int) -> dict[str, Any]:
    """A valid ``lead.created`` event (no ``occurred_at``: stamped when received)."""
    return {
        "id": event_id(tag, index),
        "type": "lead.created",
        "lead": lead_fields(tag, index),
        "data": {},
    }


def member_of(tag: str, index: int) -> str:
    """The schedule member of a lead's first touch."""
    return touch_id(SEQUENCE_ID, 1, FIRST_STEP, lead_id(tag, index))


# -- direct writes ---------------------------------------------------------------------


class RespWriter:
    """Pipelined writes over a plain socket: the RESP protocol packed by hand.

    redis-py spends ~25 us per command packing and parsing; a million leads are five
    million commands. This sends the very same commands (so Redis stores the very same
    thing) at a few microseconds each. Only for commands with one-line replies
    (integers, ``+OK``); any error reply raises.
    """

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=60
        )
        self.buffer: list[bytes] = []
        self.pending = 0
        self.outstanding = 0

    def command(self, *args: str | bytes | float | int) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.buffer.append(b"".join(parts))
        self.pending += 1  # one line per reply: the commands here answer +OK or :<n>

    def send(self) -> None:
        """Send what is buffered without waiting for the replies (Redis buffers them)."""
        if self.pending:
            self.sock.sendall(b"".join(self.buffer))
            self.buffer.clear()
            self.outstanding += self.pending
            self.pending = 0

    def drain(self, keep: int = 0) -> None:
        """Read replies until at most ``keep`` are outstanding."""
        while self.outstanding > keep:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            if chunk.startswith(b"-") or b"\n-" in chunk:  # "-" starts an error reply
                raise RuntimeError(f"Redis refused a write: {chunk[:300]!r}")
            self.outstanding -= chunk.count(b"\n")

    def flush(self) -> None:
        """Send everything and wait for every reply."""
        self.send()
        self.drain(0)

    def close(self) -> None:
        self.sock.close()


def write_leads(
    url: str,
    tag: str,
    indices: Iterable[int],
    due: Callable[[int], float],
    *,
    batch: int = 2000,
) -> int:
    """Store leads enrolled in the benchmark sequence, first touch due at ``due(i)``.

    Per lead, what ``EventProcessor`` leaves behind for a new ``lead.created``: the lead
    hash (``data``, ``fts``, ``contactable`` and ``seen:lead.created``), its timeline
    list, the email index, the event's replay
    guard (``done``, 8 days), the enrollment and the schedule entry.

    Returns:
        How many leads were written.
    """
    writer = RespWriter(url)
    written = 0
    try:
        for index in indices:
            stamp = time.time()
            occurred = datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
            lead = lead_fields(tag, index)
            the_lead = lead["id"]
            trigger = {
                "id": event_id(tag, index),
                "type": "lead.created",
                "occurred_at": occurred,
            }
            enrollment = Enrollment(
                1, EnrollmentState.ACTIVE, FIRST_STEP, [], {**trigger, "data": {}}, stamp
            )
            # Per-field times (the lead fills in over time) and the first-contactable mark.
            times = {name: stamp for name in lead if name not in ("id", "attributes")}
            times.update({f"attributes.{key}": stamp for key in lead.get("attributes", {})})
            # In the store's storage form (worker/store/leads.py).
            writer.command(
                "HSET",
                KEYS.lead(the_lead),
                DATA_FIELD,
                pack_data(lead, the_lead),
                FIELD_TIMES,
                pack_flag(FIELD_TIMES, json.dumps(times), lead),
                CONTACTABLE,
                pack_flag(CONTACTABLE, repr(stamp)),
                SEEN + "lead.created",
                pack_flag(SEEN + "lead.created", repr(stamp)),
            )
            # The lead's timeline (``nurture lead``): the event's entries as the pipeline
            # batches them: the event that first stored the lead (its fields left to the
            # lead hash) and the enrollment.
            timeline = KEYS.timeline(the_lead)
            notes: list[tuple[Kind, dict[str, Any]]] = [
                (Kind.EVENT, {"type": "lead.created", "id": trigger["id"], "occurred": stamp}),
                (Kind.FIELDS, {"changed": None}),
                (
                    Kind.ENROLLED,
                    {
                        "sequence": SEQUENCE_ID,
                        "step": FIRST_STEP,
                        "due": float(due(index)),
                        "trigger": "lead.created",
                    },
                ),
            ]
            writer.command("RPUSH", timeline, timeline_batch(stamp, notes))
            writer.command("LTRIM", timeline, -TIMELINE_MAXLEN, -1)
            writer.command("EXPIRE", timeline, TIMELINE_TTL_SECONDS)
            writer.command(
                "HSET",
                KEYS.email_index(lead["email"]),
                KEYS.email_index_field(lead["email"], the_lead),
                "1",
            )
            writer.command("SET", KEYS.event(trigger["id"]), "done", "EX", EVENT_DEDUP_SECONDS)
            writer.command(
                "HSET",
                KEYS.lead(the_lead),
                ENROLLMENT_FIELD + SEQUENCE_ID,
                pack_enrollment(enrollment),
            )
            writer.command(
                "ZADD",
                KEYS.schedule(KEYS.bucket(the_lead)),
                repr(float(due(index))),
                touch_id(SEQUENCE_ID, 1, FIRST_STEP, the_lead),
            )
            written += 1
            if writer.pending >= batch * 5:
                # Keep one batch in flight while the next one is built.
                writer.send()
                writer.drain(batch * 5)
        writer.flush()
    finally:
        writer.close()
    return written


def schedule_only(
    client: redis.Redis, key: str, tag: str, count: int, due: Callable[[int], float], batch: int
) -> None:
    """One ZADD per touch, pipelined in batches: the schedule part of enrollment alone."""
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.zadd(key, {member_of(tag, index): due(index)})
        if (index + 1) % batch == 0:
            pipe.execute()
    pipe.execute()


# -- the real pipeline -----------------------------------------------------------------


def preload_real(bench: Bench, tag: str, count: int, threads: int = 8) -> dict[str, float]:
    """Send ``count`` lead.created events through ingest and the real event actor.

    Returns:
        ``events_per_s`` (events processed per second, one in-process worker of
        ``threads`` threads) and ``seconds``.
    """
    runtime = Runtime(bench.settings())
    try:
        events = [validate_event(lead_event(tag, i), i) for i in range(count)]
        started = time.perf_counter()
        for start in range(0, count, 5000):
            ingest(runtime, events[start : start + 5000])
        worker = dramatiq.Worker(
            runtime.broker, queues={EVENTS_QUEUE}, worker_threads=threads, worker_timeout=100
        )
        worker.start()
        try:
            runtime.broker.join(EVENTS_QUEUE, interval=20, timeout=int((60 + count / 50) * 1000))
        finally:
            worker.stop(timeout=30_000)
        seconds = time.perf_counter() - started
        scheduled = runtime.store.schedule.stats().scheduled
        if scheduled < count:
            dead = runtime.store.dead_letters(3)
            raise RuntimeError(
                f"the real pipeline scheduled {scheduled} of {count} touches; dead letters: {dead}"
            )
    finally:
        runtime.close()
    return {"events_per_s": count / seconds, "seconds": seconds}


# -- fidelity --------------------------------------------------------------------------


def _shape(client: redis.Redis, tag: str) -> dict[str, Any]:
    """Normalised key names, types, fields, JSON keys and MEMORY USAGE of one tag's leads."""
    shapes: dict[str, dict[str, Any]] = {}
    sizes: dict[str, list[int]] = defaultdict(list)
    for raw in client.scan_iter(match=f"{PREFIX}:*{tag}*", count=1000):
        key = raw.decode()
        name = re.sub(r"\d+", "#", key.replace(tag, "{tag}"))
        kind = cast(bytes, client.type(key)).decode()
        fields: list[str] = []
        json_keys: list[str] = []
        if kind == "hash":
            values = cast(dict[bytes, bytes], client.hgetall(key))
            fields = sorted(f.decode() for f in values)
            for value in values.values():
                if value.startswith(b"{"):  # times as keys (packed field times) as "#"
                    json_keys += sorted(re.sub(r"\d+", "#", k) for k in json.loads(value))
        ttl = client.ttl(key)
        shapes[name] = {
            "type": kind,
            "fields": fields,
            "json": sorted(set(json_keys)),
            "ttl": ttl > 0,
        }
        sizes[name].append(int(client.memory_usage(key, samples=0) or 0))
    return {"shapes": shapes, "sizes": {k: sum(v) / len(v) for k, v in sizes.items()}}


def check_fidelity(bench: Bench, count: int = 20) -> dict[str, Any]:
    """Compare the direct writer with the real pipeline for ``count`` leads each.

    Returns:
        ``match`` (same keys, types, fields, JSON keys, TTLs and schedule entries),
        ``detail`` (what differs), ``real_bytes`` and ``direct_bytes`` (MEMORY USAGE of
        one lead's keys, schedule entry excluded) and ``keys_per_lead``.
    """
    bench.flush()
    preload_real(bench, "real", count, threads=4)
    client = bench.redis
    try:
        write_leads(bench.redis_url, "syn", range(count), lambda i: time.time())
        real = _shape(client, "real")
        direct = _shape(client, "syn")
        problems = []
        if real["shapes"] != direct["shapes"]:
            for name in sorted(set(real["shapes"]) | set(direct["shapes"])):
                if real["shapes"].get(name) != direct["shapes"].get(name):
                    problems.append(
                        f"{name}: real {real['shapes'].get(name)} vs direct "
                        f"{direct['shapes'].get(name)}"
                    )
        members = [member for member, _ in Store(client, PREFIX).schedule.entries()]
        real_members = sorted(m for m in members if "real-" in m)
        direct_members = sorted(m.replace("syn-", "real-") for m in members if "syn-" in m)
        if real_members != direct_members:
            problems.append("schedule members differ")
        real_bytes = sum(real["sizes"].values())
        direct_bytes = sum(direct["sizes"].values())
        if abs(real_bytes - direct_bytes) > 0.1 * real_bytes:
            problems.append(f"MEMORY USAGE per lead: real {real_bytes} vs direct {direct_bytes}")
        return {
            "match": not problems,
            "detail": "; ".join(problems) or "identical keys, fields, TTLs and schedule entries",
            "real_bytes": real_bytes,
            "direct_bytes": direct_bytes,
            "keys_per_lead": len(real["shapes"]),
            "sizes": real["sizes"],
        }
    finally:
        client.close()
        bench.flush()


def park_schedule(bench: Bench) -> int:
    """Move the schedule aside so no scheduler sees it; returns its size."""
    client = bench.redis
    try:
        shards = [KEYS.schedule(n) for n in range(KEYS.shards)]
        pipe = client.pipeline(transaction=False)
        for key in shards:
            pipe.zcard(key)
        sizes = [int(size) for size in pipe.execute()]
        pipe = client.pipeline(transaction=True)
        for key, size in zip(shards, sizes, strict=True):
            if size:
                pipe.rename(key, f"{key}:parked")
        pipe.execute()
        return sum(sizes)
    finally:
        client.close()


def unpark_schedule(bench: Bench) -> float:
    """Put the parked schedule back in one atomic step; returns the time it happened."""
    client = bench.redis
    try:
        pipe = client.pipeline(transaction=True)  # a single Redis: every shard at once
        for key in (KEYS.schedule(n) for n in range(KEYS.shards)):
            if client.exists(f"{key}:parked"):
                pipe.rename(f"{key}:parked", key)
        pipe.execute()
        return time.time()
    finally:
        client.close()


def wait_for_accepted(bench: Bench, count: int, timeout: float, what: str) -> float:
    """Wait until the stand-in accepted ``count`` messages in total."""
    return wait_until(lambda: bench.standin.accepted() >= count, timeout, what, interval=0.05)
