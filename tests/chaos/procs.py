"""Helpers for the chaos tests: a test sequence in the catalog copy, `nurture worker`
subprocesses pointed at the test Redis, catalog and SendGrid stand-in, event batches,
bounded waiting, and an audit of every touch (stand-in receipts against the ledger).

A touch is identified by (lead id, sequence id, step id), which is what the stand-in
sees in each message's ``custom_args``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from tests.sendgrid_standin import Received, SendGridStandIn
from worker.store import Store
from worker.store.enrollments import unpack_enrollment
from worker.store.keys import ENROLLMENT_FIELD, LEDGER_FIELD, Keys

SEQUENCE = "chaos-drip"
STEPS = ("first", "second")
TRIGGER = "chaos.start"
PREFIX = "nurture"

SEQUENCE_YAML = f"""\
# Added by the chaos tests: two quick steps, no send window.
id: {SEQUENCE}
description: Chaos-test drip (two quick steps, no send window)
trigger:
  event: {TRIGGER}
exit_on: [lead.replied]
steps:
  - id: first
    wait: 0s
    template: chaos/first
  - id: second
    wait: 1s
    template: chaos/second
"""

# `boom` is an attribute no sample lead has: `nurture validate` accepts the template, and
# a lead whose `boom` is not a number makes the render fail (round of a string), for the
# "template raising at render time for one lead" poison test.
FIRST_TEMPLATE = """\
{% block subject %}Chaos first for {{ lead | first_name("there") }}{% endblock %}
{% block text %}
Hi {{ lead | first_name("there") }},

{% if lead.attributes.boom is defined %}Your number: {{ lead.attributes.boom | round }}{% endif %}
This is the first chaos-test touch.
{% endblock %}
"""

SECOND_TEMPLATE = """\
{% block subject %}Chaos second for {{ lead | first_name("there") }}{% endblock %}
{% block text %}
Hi {{ lead | first_name("there") }},

This is the second chaos-test touch.
{% endblock %}
"""


def install_chaos_sequence(catalog_dirs: Mapping[str, Path]) -> None:
    """Make a catalog copy's nurture the chaos sequence and its templates alone.

    A lead's first event also starts the ``lead.created`` sequences (a lead is created
    by whatever event names it first; docs/sequences.md), so the shipped nurture
    sequences are taken out: the chaos leads' touches are exactly the chaos sequence's.
    """
    for path in catalog_dirs["sequences"].glob("*.yaml"):
        if path.stem not in ("fit", "decline"):
            path.unlink()
    (catalog_dirs["sequences"] / f"{SEQUENCE}.yaml").write_text(SEQUENCE_YAML)
    folder = catalog_dirs["templates"] / "chaos"
    folder.mkdir(exist_ok=True)
    (folder / "first.j2").write_text(FIRST_TEMPLATE)
    (folder / "second.j2").write_text(SECOND_TEMPLATE)


def lead_ids(count: int, prefix: str = "chaos-lead") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def chaos_event(lead_id: str, **lead: Any) -> dict[str, Any]:
    """A valid trigger event for one lead (as a JSON-ready dict)."""
    return {
        "id": f"evt-{lead_id}",
        "type": TRIGGER,
        "lead": {
            "id": lead_id,
            "email": f"{lead_id}@example.com",
            "first_name": "Chaos",
            **lead,
        },
    }


def expected_touches(leads: Iterable[str]) -> set[tuple[str, str, str]]:
    return {(lead, SEQUENCE, step) for lead in leads for step in STEPS}


# -- processes -----------------------------------------------------------------------


def nurture_command() -> list[str]:
    """The `nurture` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("nurture")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "worker.cli"]  # pragma: no cover - no console script


def worker_env(
    *,
    redis_url: str,
    catalog_dirs: Mapping[str, Path],
    state_dir: Path,
    standin: SendGridStandIn | None = None,
    **extra: str,
) -> dict[str, str]:
    """Environment for a `nurture` subprocess: nothing inherited from a developer's
    NURTURE_* variables, everything pointed at the test's own Redis and files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(
        {
            "NURTURE_REDIS_URL": redis_url,
            "NURTURE_SEQUENCES_DIR": str(catalog_dirs["sequences"]),
            "NURTURE_TEMPLATES_DIR": str(catalog_dirs["templates"]),
            "NURTURE_CONTENT_DIR": str(catalog_dirs["content"]),
            "NURTURE_STATE_DIR": str(state_dir),
            "NURTURE_OUTBOX_DIR": str(state_dir / "outbox"),
            "NURTURE_FROM_EMAIL": "hello@nurture.example",
            "NURTURE_FROM_NAME": "Nurture Team",
            "NURTURE_POSTAL_ADDRESS": "Vesterbrogade 1, 1620 København V, Denmark",
            "NURTURE_PUBLIC_URL": "https://nurture.example",
            "NURTURE_UNSUBSCRIBE_SECRET": "chaos-unsubscribe-secret",
            "NURTURE_FREQUENCY_CAP": "0s",
            "NURTURE_CLAIM_LEASE": "3s",
            "NURTURE_SEND_TIMEOUT": "3s",
            "NURTURE_SCHEDULER_INTERVAL": "0.1s",
            "NURTURE_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if standin is not None:
        env.update(
            {
                "NURTURE_DELIVERY": "sendgrid",
                "NURTURE_SENDGRID_HOST": standin.url,
                "NURTURE_SENDGRID_API_KEY": standin.api_key,
            }
        )
    env.update(extra)
    return env


class NurtureProcess:
    """One `nurture ...` subprocess with its output in a log file; ``prefix`` goes
    before the command (``ip netns exec <ns>``: run it in a network namespace)."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        cwd: Path,
        name: str,
        prefix: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [*prefix, *nurture_command(), *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL this process (no clean-up of any kind) and reap it."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        with contextlib.suppress(Exception):
            if self.alive():
                self.kill()
        self._log.close()


class Procs:
    """Starts `nurture` subprocesses for one test and reaps them at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[NurtureProcess] = []

    def start(
        self,
        args: list[str],
        env: Mapping[str, str],
        name: str | None = None,
        prefix: Sequence[str] = (),
    ) -> NurtureProcess:
        name = name or f"{args[0]}-{len(self.started)}"
        proc = NurtureProcess(args, env, self.base, name, prefix)
        self.started.append(proc)
        return proc

    def worker(
        self,
        env: Mapping[str, str],
        threads: int = 4,
        name: str | None = None,
        prefix: Sequence[str] = (),
    ) -> NurtureProcess:
        # One process (``--processes 1``): a kill -9 of it must kill the worker itself,
        # not a supervisor whose children then finish on their own.
        args = ["worker", "--processes", "1", "--threads", str(threads)]
        return self.start(args, env, name, prefix)

    def run(
        self, args: list[str], env: Mapping[str, str], stdin: bytes = b"", timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a short `nurture` command to completion."""
        return subprocess.run(
            [*nurture_command(), *args],
            env=dict(env),
            cwd=self.base,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def close(self) -> None:
        for proc in self.started:
            proc.close()

    def logs(self) -> str:
        """Every process's output, for assertion messages."""
        parts = []
        for proc in self.started:
            text = proc.output()
            parts.append(f"----- {proc.name} (rc={proc.popen.returncode}) -----\n{text[-4000:]}")
        return "\n".join(parts)


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = ""
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took.

    Raises:
        TimeoutError: When it stays false for ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except redis.RedisError:
            pass  # Redis restarting: keep polling
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not reached in {timeout:.0f}s: {what}")
        time.sleep(interval)


def wait_until_mid_sends(
    client: redis.Redis, standin: SendGridStandIn, leads: list[str], procs: Procs, share: float
) -> None:
    """Wait until every lead's event is processed and ``share`` of the chaos touches has
    reached the stand-in (the moment a chaos test kills a worker)."""
    wait_until(
        lambda: enrollment_states(client, leads).get("none", 0) == 0,
        120,
        what=f"every event processed\n{procs.logs()}",
    )
    touches = len(expected_touches(leads))
    wait_until(
        lambda: standin.accepted >= touches * share,
        180,
        interval=0.01,
        what=f"{share:.0%} of {touches} touches sent\n{procs.logs()}",
    )


def wait_until_done_or_stalled(
    done: Callable[[], bool],
    progress: Callable[[], object],
    timeout: float,
    stall: float,
    interval: float = 0.2,
) -> bool:
    """Poll until ``done()``; give up early once ``progress()`` has not changed for
    ``stall`` seconds (the caller then asserts on what is missing). True when done."""
    start = last_change = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        try:
            if done():
                return True
            now_progress = progress()
        except redis.RedisError:
            now_progress = None
        if now_progress != last:
            last, last_change = now_progress, time.monotonic()
        elif time.monotonic() - last_change > stall:
            return False
        time.sleep(interval)
    return False


# -- state -----------------------------------------------------------------------------


def _decode(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def enrollment_states(client: redis.Redis, leads: list[str]) -> Counter[str]:
    """How many leads' chaos enrollments are in each state (``none``: not enrolled)."""
    keys = Keys(PREFIX)
    pipe = client.pipeline(transaction=False)
    for lead in leads:
        pipe.hget(keys.lead(lead), ENROLLMENT_FIELD + SEQUENCE)
    states: Counter[str] = Counter()
    for raw in pipe.execute():
        states["none" if raw is None else unpack_enrollment(raw).state.value] += 1
    return states


def all_finished(client: redis.Redis, leads: list[str]) -> bool:
    """Every lead's enrollment is over and nothing of it is scheduled or claimed."""
    keys = Keys(PREFIX)
    states = enrollment_states(client, leads)
    if states.get("active") or states.get("none"):
        return False
    pipe = client.pipeline(transaction=False)
    for bucket in range(keys.shards):
        pipe.zcard(keys.schedule(bucket))
        pipe.zcard(keys.claimed(bucket))
    return not any(int(count) for count in pipe.execute())


def ledger_states(client: redis.Redis, leads: list[str]) -> dict[tuple[str, str, str], str]:
    """(lead, sequence, step) -> ledger state kind (sent, unknown, dead, sending, retry...)."""
    keys = Keys(PREFIX)
    pipe = client.pipeline(transaction=False)
    for lead in leads:
        pipe.hgetall(keys.lead(lead))
    out: dict[tuple[str, str, str], str] = {}
    for lead, entries in zip(leads, pipe.execute(), strict=True):
        for raw_field, raw_value in cast(dict[bytes, bytes], entries).items():
            if not (name := _decode(raw_field)).startswith(LEDGER_FIELD):
                continue  # the lead's data, flags, enrollments, received content
            sequence, _generation, step = name[len(LEDGER_FIELD) :].rsplit(":", 2)
            out[(lead, sequence, step)] = _decode(raw_value).split(":", 1)[0]
    return out


def in_flight(client: redis.Redis, leads: list[str]) -> int:
    """Ledger entries in state ``sending`` (reserved, no outcome recorded yet)."""
    return sum(1 for state in ledger_states(client, leads).values() if state == "sending")


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], client.xrange(Keys(PREFIX).dead, count=1_000_000)
    )
    return [{_decode(k): _decode(v) for k, v in fields.items()} for _, fields in entries]


def unknown_members(client: redis.Redis) -> set[tuple[str, str, str]]:
    out = set()
    for member, _when in Store(client, PREFIX).unknown_outcomes(1_000_000):
        sequence, _generation, step, lead = member.split("\x1f", 3)
        out.add((lead, sequence, step))
    return out


def touch_key(message: Received) -> tuple[str, str, str]:
    args = message.custom_args
    return (args.get("lead_id", ""), args.get("sequence", ""), args.get("step", ""))


@dataclass
class Audit:
    """What became of every expected touch."""

    expected: int
    received: Counter[tuple[str, str, str]]
    ledger: dict[tuple[str, str, str], str]
    unknown_recorded: set[tuple[str, str, str]]
    dead_reasons: dict[tuple[str, str, str], list[str]]
    sent_once: list[tuple[str, str, str]] = field(default_factory=list)
    duplicated: list[tuple[str, str, str]] = field(default_factory=list)
    lost: list[tuple[str, str, str]] = field(default_factory=list)
    unknown: list[tuple[str, str, str]] = field(default_factory=list)
    dead: list[tuple[str, str, str]] = field(default_factory=list)
    inconsistent: list[tuple[tuple[str, str, str], str, int]] = field(default_factory=list)
    unexpected: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "sent_once": len(self.sent_once),
            "duplicated": len(self.duplicated),
            "lost": len(self.lost),
            "unknown": len(self.unknown),
            "dead": len(self.dead),
            "inconsistent": len(self.inconsistent),
            "unexpected": len(self.unexpected),
        }

    def __str__(self) -> str:
        states = Counter(self.ledger.values())
        return (
            f"{self.summary()} ledger states {dict(states)}; "
            f"lost e.g. {self.lost[:5]}; duplicated e.g. {self.duplicated[:5]}; "
            f"inconsistent e.g. {self.inconsistent[:5]}"
        )


def audit(client: redis.Redis, standin: SendGridStandIn, leads: list[str]) -> Audit:
    """Match the stand-in's receipts against the ledger, unknown set and dead letters.

    - sent once: received exactly once and the ledger says ``sent``;
    - duplicated: received more than once (whatever the ledger says);
    - unknown: the ledger says ``unknown`` and the touch is in the unknown-outcomes set
      (received zero or one time: the worker could not know);
    - dead: the ledger says ``dead``, nothing received, and a dead letter names the touch
      with a reason;
    - lost: neither received nor recorded unknown or dead;
    - inconsistent: anything else (e.g. received but recorded dead, or ``sent`` in the
      ledger without a receipt).
    """
    expected = expected_touches(leads)
    received = Counter(touch_key(m) for m in standin.messages)
    ledger = ledger_states(client, leads)
    unknown_recorded = unknown_members(client)
    dead_reasons: dict[tuple[str, str, str], list[str]] = {}
    for letter in dead_letters(client):
        if letter.get("kind") != "touch":
            continue
        member = str(json.loads(letter["payload"]).get("touch", ""))
        parts = member.split("\x1f", 3)
        if len(parts) == 4:
            key = (parts[3], parts[0], parts[2])
            dead_reasons.setdefault(key, []).append(letter.get("reason", ""))
    result = Audit(len(expected), received, ledger, unknown_recorded, dead_reasons)
    result.unexpected = sorted(set(received) - expected)
    for key in sorted(expected):
        count = received.get(key, 0)
        state = ledger.get(key, "-")
        if count > 1:
            result.duplicated.append(key)
        elif state == "unknown" and key in unknown_recorded:
            result.unknown.append(key)
        elif count == 1 and state == "sent":
            result.sent_once.append(key)
        elif count == 0 and state == "dead" and any(r.strip() for r in dead_reasons.get(key, [])):
            result.dead.append(key)
        elif count == 0 and state not in ("unknown", "dead"):
            result.lost.append(key)
        else:
            result.inconsistent.append((key, state, count))
    return result


def first_receipts(standin: SendGridStandIn) -> dict[tuple[str, str, str], float]:
    """When each touch was first received (unix time)."""
    out: dict[tuple[str, str, str], float] = {}
    for message in standin.messages:
        out.setdefault(touch_key(message), message.received_at)
    return out


def emit(
    redis_url: str,
    docs: list[dict[str, Any]],
    state_dir: Path,
    broker_url: str | None = None,
    *,
    cluster: bool = False,
) -> int:
    """Queue events in-process (what `nurture emit` does); returns how many were accepted.

    ``broker_url``: queue them on that broker (RabbitMQ) instead of the state Redis.
    """
    from worker.events import validate_event
    from worker.ingest import ingest
    from worker.runtime import Runtime
    from worker.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=redis_url,
        state_dir=state_dir,
        broker_url=broker_url,
        redis_cluster=cluster,
    )
    runtime = Runtime(settings, load_catalog=False)
    try:
        events = [validate_event(doc, i) for i, doc in enumerate(docs)]
        return ingest(runtime, events).accepted
    finally:
        runtime.close()


def report(test: str, **values: Any) -> None:
    """One line of results per test (see them with ``pytest -s``)."""
    print(f"CHAOS-RESULT {test}: " + json.dumps(values, sort_keys=True, default=str))
