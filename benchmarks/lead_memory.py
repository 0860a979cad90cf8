"""What one lead costs in Redis today, key by key, and which keys the commands hit.

Runs the shipped example leads (``examples/events.jsonl``, each copied ``--copies``
times under new ids and addresses) through the real pipeline, the way the tests do
(tests/harness.py: a runtime on a Redis of its own, real dramatiq workers in threads,
a manual clock jumped through every due time), and reports:

* ``MEMORY USAGE`` (``SAMPLES 0``: exact) of every key of each lead, by kind (the lead
  hash ``L`` with its enrollments, ledger and received content; timeline ``tl``,
  engagement, variants, email index, replay guard...), at two moments: enrolled (first
  touch pending) and after every sequence has run its course; per lead in all, and
  without the timeline;
* the shared keys (schedule, claimed, stats, counters...) and ``used_memory`` per lead;
* during the sends, every command Redis ran (``MONITOR``): commands per sent touch and
  the share of the busiest keys, the figures a Redis Cluster design must spread.

Usage: ``python -m benchmarks.lead_memory --copies 250 [--json out.json]
[--broker-url amqp://guest:guest@127.0.0.1:5672/<vhost>]``. Talks to nothing but the
redis-server it starts on 127.0.0.1 (``worker.redis_server.start_redis``: the quick
start's settings, ``hash-max-listpack-value 1024`` included) and, with ``--broker-url``,
that RabbitMQ (give it an empty vhost of its own): then the queues are off Redis and the
counts are the state's alone.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from tests.harness import Harness
from worker.clock import ManualClock
from worker.events import validate_event
from worker.redis_server import start_redis
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import Store
from worker.store.keys import DATA_FIELD, ENROLLMENT_FIELD, LEDGER_FIELD, RECEIVED_FIELD, Keys
from worker.store.leads import is_flag

ROOT = Path(__file__).resolve().parent.parent
MONDAY_9AM = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
#: Key kinds by the part after the prefix; a kind per lead unless listed as shared.
PER_LEAD = (
    *("L", "tl", "eng", "var", "lock"),
    *("lead", "enr", "sent", "recv"),  # layout 2's four keys per lead (before the merge)
    *("email", "evt", "supp", "supph", "sgevt"),
)
#: Commands only the test harness sends (dramatiq's join polls queue sizes; settle and
#: run_until look for due touches): left out of the per-touch counts.
HARNESS_ONLY = ("HLEN", "SCARD", "ZCOUNT", "ZRANGE")

KEYS = Keys()


def example_events(copies: int) -> list[dict[str, Any]]:
    """The shipped example events, each copied under new lead ids, addresses and ids."""
    lines = (ROOT / "examples" / "events.jsonl").read_text().splitlines()
    base = [json.loads(line) for line in lines if line.strip()]
    out = []
    for n in range(copies):
        for doc in base:
            copy = json.loads(json.dumps(doc))
            copy["id"] = f"{doc['id']}-{n}"
            copy["lead"]["id"] = f"{doc['lead']['id']}-{n}"
            user, domain = doc["lead"]["email"].split("@")
            copy["lead"]["email"] = f"{user}+{n}@{domain}"
            out.append(copy)
    return out


def kind_of(key: str) -> str:
    """``lead``, ``enr``, ``sched``, ... or ``dramatiq`` for the broker's keys."""
    if key.startswith("dramatiq"):
        return "dramatiq"
    parts = [part for part in key.split(":") if not part.startswith("{")]
    kind = parts[1] if len(parts) > 1 else key
    return {"E": "email"}.get(kind, kind)  # the email index's bucket hashes


def memory_by_kind(client: redis.Redis) -> dict[str, dict[str, int]]:
    """kind -> {keys, bytes}: ``MEMORY USAGE`` (SAMPLES 0: exact) of every key."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    keys = [k.decode() for k in client.scan_iter(count=1000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    for key, used in zip(keys, pipe.execute(), strict=True):
        kind = kind_of(key)
        out[kind]["keys"] += 1
        out[kind]["bytes"] += int(used or 0)
    return dict(out)


def per_lead(by_kind: dict[str, dict[str, int]], leads: int) -> dict[str, float]:
    """Bytes per lead: ``all`` (every per-lead key and the lead's share of the schedule)
    and ``without timeline``."""
    total = sum(
        v["bytes"]
        for kind, v in by_kind.items()
        if kind in PER_LEAD or kind in ("sched", "claimed")
    )
    timeline = by_kind.get("tl", {}).get("bytes", 0)
    return {"all": total / leads, "without timeline": (total - timeline) / leads}


def field_sizes(client: redis.Redis, lead_id: str) -> dict[str, int]:
    """Bytes of the stored values of one lead's hash, by part (names and values)."""
    fields = {k.decode(): v for k, v in client.hgetall(KEYS.lead(lead_id)).items()}

    def part(prefix: str) -> list[int]:
        return [len(k) + len(v) for k, v in fields.items() if k.startswith(prefix)]

    return {
        "lead d JSON": len(fields.get(DATA_FIELD, b"")),
        "lead flags (names+values)": sum(len(k) + len(v) for k, v in fields.items() if is_flag(k)),
        "enrollments (names+values)": sum(part(ENROLLMENT_FIELD)),
        "enrollments count": len(part(ENROLLMENT_FIELD)),
        "ledger (names+values)": sum(part(LEDGER_FIELD)),
        "ledger entries": len(part(LEDGER_FIELD)),
        "received (r)": len(fields.get(RECEIVED_FIELD, b"")),
    }


class CommandTap:
    """``MONITOR`` in a thread: every command with its keys, while it runs."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.commands: Counter[str] = Counter()
        self.keys: Counter[str] = Counter()
        #: (command, key) pairs: which keys each command hit.
        self.calls: Counter[tuple[str, str]] = Counter()
        self.total = 0
        self.by_owner: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._monitor = self.client.monitor()

    def start(self) -> None:
        self._monitor.connection.send_command("MONITOR")
        self._monitor.connection.read_response()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._monitor.connection.read_response()
            except (redis.RedisError, OSError, ValueError):
                return
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            self._record(text)

    def _record(self, text: str) -> None:
        # A MONITOR line: <time> [<db> <client>] "CMD" "arg" ...; Lua's own commands
        # come with client "lua", so each command a script runs counts once.
        parts = re.findall(r'"(.*?)(?<!\\)"', text.split("] ", 1)[-1])
        if not parts:
            return
        name = parts[0].upper()
        if name in HARNESS_ONLY or name in ("MONITOR", "EVALSHA", "EVAL", "SCRIPT"):
            # Scripts' own commands are reported one by one (client "lua"); the test
            # harness's polling (queue sizes, "anything due?") is not the worker's.
            return
        if name in ("PING", "INFO", "MULTI", "EXEC", "CLIENT") or len(parts) < 2:
            return
        self.total += 1
        self.commands[name] += 1
        self.keys[_key_class(parts[1])] += 1
        self.calls[name, _key_class(parts[1])] += 1
        self.by_owner["dramatiq" if parts[1].startswith("dramatiq") else "state"] += 1

    def stop(self) -> None:
        self._stop.set()
        self.client.ping()  # wakes the monitor thread with one more line
        self._thread.join(timeout=5)
        self._monitor.connection.disconnect()
        self.client.close()


def _key_class(key: str) -> str:
    """Shared keys by name; per-lead keys as ``<kind>:<lead>`` (one class per lead)."""
    if key.startswith("dramatiq"):
        return re.sub(r"\.[0-9a-f-]{36}.*$", ".<worker>", key)
    return key


def example_settings(redis_url: str, work: Path, **overrides: Any) -> Settings:
    """Settings for running the shipped catalog on ``redis_url`` with files in ``work``."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=redis_url,
        sequences_dir=ROOT / "sequences",
        templates_dir=ROOT / "templates",
        content_dir=ROOT / "content",
        outbox_dir=work / "outbox",
        from_email="hello@nurture.example",
        from_name="Nurture Team",
        postal_address="Vesterbrogade 1, 1620 København V, Denmark",
        public_url="https://nurture.example",
        webhook_secrets=["bench-secret"],
        unsubscribe_secret="bench-unsubscribe-secret",
        frequency_cap=0.0,
        state_dir=work / ".nurture",
        **overrides,
    )


def run(copies: int, broker_url: str | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="lead-memory-"))
    server = start_redis(work / "redis", appendonly=False)
    settings = example_settings(server.url, work, broker_url=broker_url)
    clock = ManualClock(MONDAY_9AM)
    runtime = Runtime(settings, clock=clock)
    harness = Harness(runtime, clock, settings.outbox_dir)
    client = server.client()
    result: dict[str, Any] = {
        "copies": copies,
        "redis_version": client.info()["redis_version"],
        "hash_max_listpack_value": int(client.config_get("hash-max-*-value").popitem()[1]),
        "broker": "rabbitmq" if broker_url else "redis",
    }
    try:
        harness.start(threads=4)
        events = [validate_event(doc) for doc in example_events(copies)]
        leads = len(events)
        result["leads"] = leads
        base = int(client.info("memory")["used_memory"])
        for i in range(0, leads, 100):
            harness.emit(*events[i : i + 100])
        harness.settle(timeout=120)
        result["enrolled"] = {
            "by_kind": memory_by_kind(client),
            "used_memory_per_lead": (int(client.info("memory")["used_memory"]) - base) / leads,
            "fields_first_lead": field_sizes(client, events[0].lead.id),
            "scheduled": Store(client).schedule.stats().scheduled,
        }
        result["enrolled"]["per_lead"] = per_lead(result["enrolled"]["by_kind"], leads)
        tap = CommandTap(server.url)
        tap.start()
        harness.run_until((MONDAY_9AM + timedelta(days=120)).timestamp())
        tap.stop()
        sent = len(list(settings.outbox_dir.glob("*.eml")))
        result["done"] = {
            "by_kind": memory_by_kind(client),
            "used_memory_per_lead": (int(client.info("memory")["used_memory"]) - base) / leads,
            "fields_first_lead": field_sizes(client, events[0].lead.id),
            "sent": sent,
        }
        result["done"]["per_lead"] = per_lead(result["done"]["by_kind"], leads)
        result["commands"] = {
            "total": tap.total,
            "per_sent_touch": tap.total / max(sent, 1),
            "state_per_sent_touch": tap.by_owner["state"] / max(sent, 1),
            "dramatiq_per_sent_touch": tap.by_owner["dramatiq"] / max(sent, 1),
            "by_name": dict(tap.commands.most_common(25)),
            "busiest_keys": [
                {"key": k.replace("\x1f", "|"), "calls": c, "share": c / max(tap.total, 1)}
                for k, c in tap.keys.most_common(12)
            ],
        }
    finally:
        harness.stop()
        runtime.close()
        client.close()
        server.stop()
    return result


def report(result: dict[str, Any]) -> str:
    leads = result["leads"]
    lines = [
        f"leads: {leads} (shipped examples x {result['copies']}), Redis {result['redis_version']}"
        f" (hash-max-listpack-value {result['hash_max_listpack_value']})"
        f", queues on {result.get('broker', 'redis')}"
    ]
    for stage in ("enrolled", "done"):
        data = result[stage]
        lines.append(f"\n== {stage}: used_memory/lead {data['used_memory_per_lead']:.0f} B")
        for kind, v in sorted(data["by_kind"].items(), key=lambda kv: -kv[1]["bytes"]):
            per = v["bytes"] / leads
            lines.append(
                f"  {kind:10} keys {v['keys']:6}  bytes {v['bytes']:9}  per lead {per:7.1f}"
            )
        totals = per_lead(data["by_kind"], leads)
        lines.append(
            f"  MEMORY USAGE per lead (per-lead keys + schedule): {totals['all']:.0f} B"
            f" ({totals['without timeline']:.0f} B without the timeline)"
        )
        lines.append(f"  first lead's values: {data['fields_first_lead']}")
    cmd = result["commands"]
    lines.append(
        f"\n== commands while sending: {cmd['total']} for {result['done']['sent']} sends "
        f"({cmd['per_sent_touch']:.1f} per sent touch: state {cmd['state_per_sent_touch']:.1f}, "
        f"dramatiq's queues {cmd['dramatiq_per_sent_touch']:.1f})"
    )
    lines.append(f"  by name: {cmd['by_name']}")
    for row in cmd["busiest_keys"]:
        lines.append(f"  {row['share']:6.1%}  {row['calls']:6}  {row['key']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=250)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--broker-url", help="queue on this RabbitMQ (an empty vhost)")
    args = parser.parse_args()
    result = run(args.copies, args.broker_url)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
