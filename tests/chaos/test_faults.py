"""The SendGrid stand-in answers 429, 500, slow, drops the connection, or accepts and
loses the answer for 30% of the requests (and refuses the first few with a 400):
every touch ends sent once, dead-lettered with a reason, or recorded as
outcome-unknown; none vanish, and the ledger adds up."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.chaos.procs import (
    SEQUENCE,
    STEPS,
    Procs,
    all_finished,
    audit,
    chaos_event,
    dead_letters,
    emit,
    expected_touches,
    lead_ids,
    report,
    wait_until,
    worker_env,
)
from tests.sendgrid_standin import SendGridStandIn
from worker.store import Store

THREADS = 4
WORKERS = 2
REFUSED = 3


@pytest.mark.chaos
def test_thirty_percent_faulty_answers_every_touch_ends_sent_dead_or_unknown(
    redis_url: str,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    leads = lead_ids(1000 if full_size else 100)
    touches = len(expected_touches(leads))
    client = redis.Redis.from_url(redis_url)
    standin.faults(
        rate=0.3, kinds=("429", "500", "slow", "drop", "lost"), seed=20261123, slow_delay=1.0
    )
    # A few permanent refusals first, so the dead-letter path is taken too.
    standin.script([400] * REFUSED)
    env = worker_env(
        redis_url=redis_url, catalog_dirs=chaos_catalog, state_dir=tmp_path, standin=standin
    )
    assert emit(redis_url, [chaos_event(lead) for lead in leads], tmp_path) == len(leads)
    started = time.monotonic()
    workers = [procs.worker(env, THREADS, name=f"worker-{i}") for i in range(WORKERS)]
    wait_until(
        lambda: all_finished(client, leads),
        420 if full_size else 180,
        interval=0.2,
        what=f"every enrollment finished\n{procs.logs()}",
    )
    elapsed = time.monotonic() - started
    result = audit(client, standin, leads)
    for worker in workers:
        worker.terminate()
    exit_codes = [w.wait(30) for w in workers]

    states = Counter(result.ledger.values())
    stats = {step: dict(v) for step, v in _stats(client).items()}
    unknown_letters = [
        d for d in dead_letters(client) if d["kind"] == "touch" and "unknown" in d["reason"]
    ]
    report(
        "faults-30pct",
        touches=touches,
        requests=standin.requests,
        seconds=round(elapsed, 1),
        ledger=dict(states),
        stats=stats,
        **result.summary(),
    )
    assert result.lost == [] and result.duplicated == [], str(result)
    assert result.inconsistent == [] and result.unexpected == [], str(result)
    # The ledger adds up: one final state per touch, and it matches what was received.
    assert set(states) <= {"sent", "dead", "unknown"}, str(result)
    assert sum(states.values()) == touches
    assert len(result.sent_once) + len(result.dead) + len(result.unknown) == touches
    assert states["sent"] == len(result.sent_once)
    # Every unknown outcome is on record for the operator (status and dead letters).
    assert {k for k in result.unknown} <= result.unknown_recorded
    assert len(unknown_letters) >= len(result.unknown)
    # The per-step counters agree with the ledger.
    for step in STEPS:
        sent_in_ledger = sum(
            1
            for (_, seq, s), state in result.ledger.items()
            if seq == SEQUENCE and s == step and state == "sent"
        )
        assert stats.get(step, {}).get("sent", 0) == sent_in_ledger, stats
    # The faults did happen: retries were made and some answers were lost.
    assert sum(v.get("retried", 0) for v in stats.values()) > 0, stats
    assert result.unknown, "no answer was lost: the fault injection did not work"
    assert len(result.dead) == REFUSED, str(result)
    for key in result.dead:
        assert any("400" in reason for reason in result.dead_reasons[key]), result.dead_reasons
    assert exit_codes == [0] * WORKERS, procs.logs()


def _stats(client: redis.Redis) -> dict[str, Counter[str]]:
    summed = Store(client).counters.sequence_hashes([SEQUENCE])[SEQUENCE]
    out: dict[str, Counter[str]] = {}
    for name, value in summed.items():
        step, _, counter = name.rpartition(":")
        out.setdefault(step, Counter())[counter] += value
    return out
