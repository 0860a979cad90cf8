"""SIGTERM during load: the worker finishes what is in flight, loses nothing and exits
0 within the grace period; after a restart everything completes exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.chaos.procs import (
    SEQUENCE,
    Procs,
    all_finished,
    audit,
    chaos_event,
    emit,
    enrollment_states,
    expected_touches,
    lead_ids,
    ledger_states,
    report,
    unknown_members,
    wait_until,
    worker_env,
)
from tests.sendgrid_standin import SendGridStandIn

THREADS = 4
# Docker's default grace period between SIGTERM and SIGKILL.
GRACE_SECONDS = 10.0


@pytest.mark.chaos
def test_sigterm_under_load_finishes_in_flight_work_and_loses_nothing(
    redis_url: str,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    leads = lead_ids(2500 if full_size else 200)
    touches = len(expected_touches(leads))
    client = redis.Redis.from_url(redis_url)
    # Slow-ish answers, so that requests are in flight when the signal comes.
    standin.faults(rate=1.0, kinds=("slow",), slow_delay=0.05)
    env = worker_env(
        redis_url=redis_url, catalog_dirs=chaos_catalog, state_dir=tmp_path, standin=standin
    )
    assert emit(redis_url, [chaos_event(lead) for lead in leads], tmp_path) == len(leads)
    started = time.monotonic()
    worker = procs.worker(env, THREADS, name="terminated")
    wait_until(
        lambda: standin.accepted >= touches * 0.4,
        180,
        interval=0.01,
        what=f"40% of {touches} touches sent\n{procs.logs()}",
    )
    worker.terminate()
    signalled = time.monotonic()
    exit_code = worker.wait(GRACE_SECONDS + 5)
    stop_seconds = time.monotonic() - signalled

    # Right after the exit: nothing is left half-sent, nothing is recorded unknown, and
    # everything received so far is recorded as sent, once.
    ledger = ledger_states(client, leads)
    half_sent = sorted(key for key, state in ledger.items() if state in ("sending", "unknown"))
    at_stop = audit(client, standin, leads)
    received_at_stop = standin.accepted
    received_not_sent = sorted(
        key for key in at_stop.received if ledger.get(key) != "sent" and key[1] == SEQUENCE
    )
    states_at_stop = enrollment_states(client, leads)

    restarted = procs.worker(env, THREADS, name="restarted")
    wait_until(
        lambda: all_finished(client, leads),
        300 if full_size else 120,
        interval=0.2,
        what=f"every enrollment finished after the restart\n{procs.logs()}",
    )
    elapsed = time.monotonic() - started
    result = audit(client, standin, leads)
    restarted.terminate()
    restart_exit = restarted.wait(30)

    report(
        "sigterm",
        touches=touches,
        received_at_stop=received_at_stop,
        stop_seconds=round(stop_seconds, 2),
        exit_code=exit_code,
        enrollments_at_stop=dict(states_at_stop),
        seconds=round(elapsed, 1),
        **result.summary(),
    )
    assert exit_code == 0, procs.logs()
    assert stop_seconds <= GRACE_SECONDS, f"took {stop_seconds:.1f}s to stop"
    assert half_sent == [], f"left half-sent at SIGTERM: {half_sent[:10]}"
    assert received_not_sent == [], f"received but not recorded sent: {received_not_sent[:10]}"
    assert at_stop.duplicated == [], str(at_stop)
    assert unknown_members(client) == set()
    assert result.sent_once == sorted(expected_touches(leads)), str(result)
    assert result.duplicated == [] and result.lost == [] and result.unknown == [], str(result)
    assert restart_exit == 0, procs.logs()
