"""Redis restarted in the middle of a run (AOF ``everysec``), on the same port and
directory: the workers reconnect by themselves, and every touch ends sent once or
recorded. A clean shutdown loses nothing; ``kill -9`` of Redis may lose at most the
last second of writes, so only touches sent in that last second may go out again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.chaos.procs import (
    Procs,
    all_finished,
    audit,
    chaos_event,
    emit,
    enrollment_states,
    expected_touches,
    first_receipts,
    lead_ids,
    report,
    wait_until,
    wait_until_done_or_stalled,
    worker_env,
)
from tests.sendgrid_standin import SendGridStandIn
from worker.redis_server import start_redis
from worker.runtime import Tuning

THREADS = 4
WORKERS = 2
# AOF everysec: Redis fsyncs once a second, so a crash loses up to about a second of
# writes (two in the worst case Redis documents, when an fsync is slow). A `kill -9` of
# the Redis process alone loses nothing already written to the OS (Redis writes the AOF
# buffer before answering), so in practice 0 duplicates are seen; the window is what the
# test allows, as the issue asks, not what it expects.
EVERYSEC_WINDOW = 2.0


@pytest.mark.chaos
@pytest.mark.parametrize("how", ["shutdown", "kill-9"])
def test_redis_restart_mid_run_workers_reconnect_and_nothing_is_lost(
    how: str,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    redis_dir = tmp_path / "redis-chaos"
    server = start_redis(redis_dir, appendonly=True)  # ours alone, not the session Redis
    servers = [server]
    try:
        leads = lead_ids(2500 if full_size else 200)
        touches = len(expected_touches(leads))
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        standin.faults(rate=1.0, kinds=("slow",), slow_delay=0.02)
        env = worker_env(
            redis_url=server.url, catalog_dirs=chaos_catalog, state_dir=tmp_path, standin=standin
        )
        assert emit(server.url, [chaos_event(lead) for lead in leads], tmp_path) == len(leads)
        started = time.monotonic()
        workers = [procs.worker(env, THREADS, name=f"worker-{i}") for i in range(WORKERS)]
        wait_until(
            lambda: enrollment_states(client, leads).get("none", 0) == 0,
            120,
            what="every event processed",
        )
        wait_until(
            lambda: standin.accepted >= touches * 0.3,
            180,
            interval=0.01,
            what=f"30% of {touches} touches sent\n{procs.logs()}",
        )
        if how == "shutdown":
            server.stop()  # SHUTDOWN: AOF written and fsynced
        else:
            server.kill()
        down_at = time.time()
        received_at_stop = standin.accepted
        time.sleep(2.0)  # the workers meet a dead Redis for a while
        server = start_redis(redis_dir, port=server.port, appendonly=True)
        servers.append(server)
        client = redis.Redis.from_url(server.url, socket_timeout=5)

        wait_until(
            lambda: all_finished(client, leads),
            300 if full_size else 150,
            interval=0.2,
            what=f"every enrollment finished after the restart\n{procs.logs()}",
        )
        elapsed = time.monotonic() - started
        restarted = [w.name for w in workers if not w.alive()]
        result = audit(client, standin, leads)
        firsts = first_receipts(standin)
        outside_window = [
            key for key in result.duplicated if firsts[key] < down_at - EVERYSEC_WINDOW
        ]
        for worker in workers:
            worker.terminate()
        exit_codes = [w.wait(30) for w in workers]

        report(
            f"redis-{how}",
            touches=touches,
            received_at_stop=received_at_stop,
            seconds=round(elapsed, 1),
            duplicated_outside_everysec_window=len(outside_window),
            **result.summary(),
        )
        assert restarted == [], f"workers died with Redis: {restarted}\n{procs.logs()}"
        assert result.lost == [], str(result)
        assert result.unexpected == [], str(result)
        # Sends that were in flight when Redis went away cannot be recorded as sent:
        # they end unknown, never resent.
        # Each thread delivers its message's touches together (send_many): a touch sent
        # while Redis was down cannot be recorded, up to a whole batch per thread.
        batch = Tuning().touches_per_message
        assert len(result.unknown) <= THREADS * WORKERS * batch, str(result)
        assert result.inconsistent == [], str(result)
        if how == "shutdown":
            assert result.duplicated == [], str(result)
        else:
            assert outside_window == [], str(result)
        assert exit_codes == [0] * WORKERS, procs.logs()
    finally:
        for running in servers:
            running.stop()


@pytest.mark.chaos
def test_redis_restart_while_events_are_processed_loses_no_event(
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
    full_size: bool,
) -> None:
    """Events already accepted (queued durably) must survive a Redis restart that
    happens while the workers are processing them: each lead still gets its touches."""
    redis_dir = tmp_path / "redis-chaos"
    server = start_redis(redis_dir, appendonly=True)
    servers = [server]
    try:
        leads = lead_ids(2000 if full_size else 400)
        touches = len(expected_touches(leads))
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        env = worker_env(
            redis_url=server.url, catalog_dirs=chaos_catalog, state_dir=tmp_path, standin=standin
        )
        workers = [procs.worker(env, THREADS, name=f"worker-{i}") for i in range(WORKERS)]
        wait_until(
            lambda: int(client.hlen("nurture:schedulers")) == WORKERS,
            60,
            what=f"workers up\n{procs.logs()}",
        )
        assert emit(server.url, [chaos_event(lead) for lead in leads], tmp_path) == len(leads)
        # Stop Redis as soon as the workers are busy with the events.
        wait_until(
            lambda: enrollment_states(client, leads).get("active", 0) > 0,
            60,
            interval=0.005,
            what="event processing started",
        )
        server.stop()
        time.sleep(2.0)
        server = start_redis(redis_dir, port=server.port, appendonly=True)
        servers.append(server)
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        processed_after_restart = enrollment_states(client, leads)
        # Wait until done, or until nothing has moved for a while (events lost for good).
        wait_until_done_or_stalled(
            lambda: all_finished(client, leads),
            lambda: (tuple(sorted(enrollment_states(client, leads).items())), standin.accepted),
            timeout=240 if full_size else 120,
            stall=45,  # a lead lock left by the outage expires after 30 s
        )
        states = enrollment_states(client, leads)
        result = audit(client, standin, leads)
        restarted = [w.name for w in workers if not w.alive()]
        for worker in workers:
            worker.terminate()
        exit_codes = [w.wait(30) for w in workers]
        report(
            "redis-restart-during-events",
            touches=touches,
            events_unprocessed_at_restart=processed_after_restart.get("none", 0),
            events_never_processed=states.get("none", 0),
            **result.summary(),
        )
        assert restarted == [], procs.logs()
        assert states.get("none", 0) == 0, (
            f"{states.get('none', 0)} of {len(leads)} accepted events were never processed "
            f"after the Redis restart (their leads have no enrollment); {result}"
        )
        assert result.lost == [] and result.duplicated == [], str(result)
        assert exit_codes == [0] * WORKERS, procs.logs()
    finally:
        for running in servers:
            running.stop()
