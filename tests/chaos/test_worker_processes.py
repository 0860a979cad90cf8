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

    os.kill(first[0], signal.SIGKILL)
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
    # broker: after its heartbeat timeout (60 s, Tuning.heartbeat_timeout_ms), at the next
    # maintenance run, which each fetch starts by chance; recovery took 10-90 s in runs
    # here, so the bound leaves room for a late maintenance run.
    wait_until(lambda: all_finished(client, leads), 300, what=f"all touches\n{supervisor.output()}")
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
