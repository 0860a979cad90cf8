"""The quick start shows an email on any day (issue 12, item 7): with the clock on a
Sunday night, the sample events put an email in outbox/ within a minute, and
``nurture status`` gives the next due time in UTC and in local time."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.harness import Harness
from worker.clock import ManualClock
from worker.events import parse_events

INLINE_QUEUE = True
SUNDAY_NIGHT = datetime(2026, 11, 29, 22, 30, tzinfo=UTC)  # a Sunday, out of every window


def test_sample_events_give_an_email_within_a_minute_on_a_sunday(
    make_harness: Callable[..., Harness],
) -> None:
    assert SUNDAY_NIGHT.weekday() == 6
    h = make_harness(clock=ManualClock(SUNDAY_NIGHT))
    events, errors = parse_events((ROOT / "examples" / "events.jsonl").read_bytes())
    assert errors == []
    h.emit(*events)
    h.settle()
    h.advance(timedelta(minutes=1))
    assert h.sent() == [("demo-ann", "quick-start", "hello")]
    [email] = h.messages()
    assert email["To"].addresses[0].addr_spec == "ann@example.com"


@pytest.mark.slow  # runs the CLI as a subprocess
def test_status_shows_the_next_due_time_in_utc_and_local_time(
    make_harness: Callable[..., Harness], redis_url: str, tmp_path: Path
) -> None:
    h = make_harness()
    when = datetime(2026, 11, 30, 8, 0, tzinfo=UTC).timestamp()
    keys = h.rt.store.keys
    h.rt.store.redis.zadd(
        keys.schedule(keys.bucket("l")), {"value-first\x1f1\x1fcase-study\x1fl": when}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update({"NURTURE_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "TZ": "Europe/Copenhagen"})
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "next due: 2026-11-30 08:00:00 UTC (Mon 09:00 CET here)" in result.stdout
