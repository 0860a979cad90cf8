"""`nurture status` while messages are being retried: the operator's view must work
exactly when things go wrong (a retry is a delayed dramatiq message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.procs import Procs, report, worker_env
from worker.runtime import Runtime
from worker.settings import Settings


@pytest.mark.chaos
def test_status_works_while_a_message_waits_for_its_retry(
    redis_url: str, chaos_catalog: dict[str, Path], procs: Procs, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url, state_dir=tmp_path)  # type: ignore[call-arg]
    runtime = Runtime(settings, load_catalog=False)
    try:
        # What the Retries middleware does after a failure: re-enqueue with a delay.
        runtime.actors.process_events.send_with_options(args=([],), delay=60_000)
    finally:
        runtime.close()
    env = worker_env(redis_url=redis_url, catalog_dirs=chaos_catalog, state_dir=tmp_path)
    result = procs.run(["status"], env)
    output = result.stdout.decode() + result.stderr.decode()
    report("status-with-delayed-message", exit_code=result.returncode, output=output[-300:])
    assert result.returncode == 0, output
    assert "queue events: 0 ready, 1 delayed" in output, output
