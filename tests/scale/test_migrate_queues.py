"""``nurture migrate queues``: messages queued in dramatiq's Redis broker move to
RabbitMQ (ready ones ready, delayed ones with their due time) and are processed there;
nothing stays behind in Redis, nothing is lost."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.procs import nurture_command
from tests.harness import Harness, event, running
from tests.rabbitmq import AmqpTarget
from worker.broker import queue_depths
from worker.errors import SettingsError
from worker.migrate import MovedQueue, migrate_queues
from worker.store.queues import queued_messages


def test_queued_messages_move_to_rabbitmq_and_are_processed_there(
    make_harness: Callable[..., Harness], app_queues: AmqpTarget
) -> None:
    old = make_harness()  # queues in the state Redis; no worker runs
    old.emit(event("e1"), event("e2", lead_id="lead-2", email="bo@example.com"))
    old.rt.actors.send_touches.send_with_options(args=([],), delay=3_600_000)
    redis_client = old.rt.store.redis
    assert len(queued_messages(redis_client, "dramatiq", "events")) == 1
    assert len(queued_messages(redis_client, "dramatiq", "touches")) == 1

    new = make_harness(broker_url=app_queues.url)
    moved = migrate_queues(new.rt)

    assert moved == [MovedQueue("events", 1, 0), MovedQueue("touches", 0, 1)]
    assert queued_messages(redis_client, "dramatiq", "events") == []
    assert queued_messages(redis_client, "dramatiq", "touches") == []
    assert queue_depths(old.rt.broker)["events"] == {"ready": 0, "delayed": 0, "dead": 0}
    depths = queue_depths(new.rt.broker)
    assert depths["events"]["ready"] == 1
    assert depths["touches"]["delayed"] == 1  # still an hour away
    with running(new):
        # Not settle(): a worker holds the delayed message for its hour, and joining the
        # worker would wait for it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            new.rt.store.enrollment(lead, "value-first") for lead in ("lead-1", "lead-2")
        ):
            time.sleep(0.2)
    for lead in ("lead-1", "lead-2"):
        assert new.rt.store.enrollment(lead, "value-first") is not None, lead


def test_migrating_needs_a_rabbitmq_to_move_to(make_harness: Callable[..., Harness]) -> None:
    with pytest.raises(SettingsError, match="NURTURE_BROKER_URL"):
        migrate_queues(make_harness().rt)


@pytest.mark.slow
def test_nurture_migrate_queues_without_a_broker_says_what_to_set(
    redis_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_REDIS_URL=redis_url, NURTURE_STATE_DIR=str(tmp_path))
    result = subprocess.run(
        [*nurture_command(), "migrate", "queues"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("nurture migrate: NURTURE_BROKER_URL: set it to the RabbitMQ")
    assert "Traceback" not in result.stderr
