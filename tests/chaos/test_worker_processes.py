"""``nurture worker --processes N``: real processes on a real Redis, sending to the stand-in.

The supervisor starts N ``nurture worker --processes 1`` children, each with its own
scheduler (claims are atomic leases, so they share the schedule safely), restarts a
child that dies, passes SIGTERM on, and its children stop when it is gone.
"""

from __future__ import annotations

import os
import signal
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
    expected_touches,
    lead_ids,
    wait_until,
    worker_env,
)
from tests.sendgrid_standin import SendGridStandIn


def children(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def unacked_by_broker(client: redis.Redis) -> dict[str, int]:
    """dramatiq broker id -> its messages fetched and not acknowledged (the Redis broker's
    ``dramatiq:__acks__.<broker id>.<queue>`` sets, dispatch.lua)."""
    out: dict[str, int] = {}
    for key in client.scan_iter(match="dramatiq:__acks__.*", count=1000):
        broker = key.decode().removeprefix("dramatiq:__acks__.").split(".", 1)[0]
        out[broker] = out.get(broker, 0) + int(client.scard(key))
    return out


def dead_broker(client: redis.Redis, held: dict[str, int]) -> str | None:
    """The broker id of the killed child, if it held messages: of those holding some
    before the kill, the one whose heartbeat (``dramatiq:__heartbeats__``) has stopped."""
    time.sleep(2.0)  # a live process's consumers beat every 200 ms at most
    beats = dict(client.zrange("dramatiq:__heartbeats__", 0, -1, withscores=True))
    now_ms = time.time() * 1000
    stale = [b for b in held if now_ms - beats.get(b.encode(), 0.0) > 1500]
    return stale[0] if stale else None


@pytest.mark.chaos
def test_processes_share_the_schedule_survive_a_dead_child_and_stop_on_sigterm(
    redis_url: str,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
) -> None:
    leads = lead_ids(120)
    client = redis.Redis.from_url(redis_url)
    standin.faults(rate=1.0, kinds=("slow",), slow_delay=0.02)
    env = worker_env(
        redis_url=redis_url, catalog_dirs=chaos_catalog, state_dir=tmp_path, standin=standin
    )
    assert emit(redis_url, [chaos_event(lead) for lead in leads], tmp_path) == len(leads)
    supervisor = procs.start(["worker", "--processes", "2", "--threads", "2"], env, "supervisor")
    wait_until(lambda: len(children(supervisor.pid)) == 2, 30, what="two worker processes")
    first = children(supervisor.pid)
    # Each child runs its own scheduler: two heartbeats.
    wait_until(lambda: client.hlen("nurture:schedulers") >= 2, 30, what="two schedulers")

    held = unacked_by_broker(client)
    os.kill(first[0], signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(
        lambda: len(children(supervisor.pid)) == 2 and first[0] not in children(supervisor.pid),
        30,
        what=f"the killed child replaced\n{supervisor.output()}",
    )
    wait_until(
        lambda: "was killed by SIGKILL; starting it again" in supervisor.output(),
        10,
        what=f"the supervisor to report the dead child\n{supervisor.output()}",
    )

    # The killed child's unacknowledged queue messages come back through dramatiq's Redis
    # broker: after its heartbeat timeout (NURTURE_BROKER_HEARTBEAT_TIMEOUT, 15 s), at the
    # next maintenance run on their queue, which a fetch starts with a chance of
    # NURTURE_BROKER_MAINTENANCE_CHANCE (5 %): an idle consumer fetches 5-10 times a
    # second, so that run comes ~1-3 s later. All touches were done 18-22 s after the
    # kill in runs here (60-90 s with dramatiq's defaults of 60 s and 0.1 %).
    dead = dead_broker(client, held)
    if dead:
        wait_until(
            lambda: dead not in unacked_by_broker(client), 40, what="the dead child's requeue"
        )
        print(f"\nits {held[dead]} messages requeued {time.monotonic() - killed_at:.1f} s after")
    wait_until(lambda: all_finished(client, leads), 60, what=f"all touches\n{supervisor.output()}")
    print(f"all touches done {time.monotonic() - killed_at:.1f} s after the SIGKILL")
    result = audit(client, standin, leads)
    assert result.expected == len(expected_touches(leads))
    assert not result.duplicated and not result.lost and not result.inconsistent, str(result)

    running = children(supervisor.pid)
    supervisor.terminate()
    assert supervisor.wait(timeout=60) == 0, supervisor.output()
    assert not any(alive(pid) for pid in running)
    client.close()


@pytest.mark.chaos
def test_children_stop_when_the_supervisor_is_killed_and_a_crash_loop_stops_it(
    redis_url: str,
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
    procs: Procs,
    tmp_path: Path,
) -> None:
    env = worker_env(
        redis_url=redis_url, catalog_dirs=chaos_catalog, state_dir=tmp_path, standin=standin
    )
    supervisor = procs.start(["worker", "--processes", "2", "--threads", "1"], env, "killed")
    wait_until(lambda: len(children(supervisor.pid)) == 2, 30, what="two worker processes")
    orphans = children(supervisor.pid)
    supervisor.kill()
    # Orphaned children notice within a second and finish; they are not left running.
    wait_until(lambda: not any(alive(pid) for pid in orphans), 30, what="orphans to stop")

    looping = procs.start(["worker", "--processes", "2", "--threads", "1"], env, "looping")
    kills = 0
    deadline = time.monotonic() + 50
    while looping.alive() and time.monotonic() < deadline:
        pids = children(looping.pid)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            kills += 1
        time.sleep(0.3)
    assert looping.wait(timeout=60) == 1, looping.output()
    assert kills >= 5
    assert "exited 5 times within 60 s, so nurture worker stops" in looping.output()
