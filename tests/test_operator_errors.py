"""Operators never see a traceback (issue 12, item 8), tried through the real ``nurture``
command: a closed pipe ends quietly, Redis trouble names NURTURE_REDIS_URL, bad settings
are refused at start-up naming the variable, and the worker logs one concise line per
touch (JSON with NURTURE_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, nurture
from worker.store.keys import Keys

pytestmark = pytest.mark.slow  # the CLI as subprocesses


def test_status_into_head_ends_cleanly(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    # Enough counters that the output is far larger than a pipe's buffer.
    keys = Keys()
    client.hset(keys.stats("value-first", 0), mapping={f"s{i}:sent": i for i in range(5000)})
    client.sadd(keys.stats_index(0), "value-first")
    client.close()
    result = subprocess.run(
        f"'{sys.executable}' -m worker.cli status | head -4",
        shell=True,
        env=cli_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(result.stdout.splitlines()) == 4
    assert result.stderr == ""


def test_redis_trouble_names_the_setting(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli_env["NURTURE_REDIS_URL"] = "redis://127.0.0.1:9/0"
    for command in (["status"], ["dead-letters"], ["emit", str(ROOT / "examples/events.jsonl")]):
        result = nurture(command, cli_env, tmp_path)
        assert result.returncode == 1, command
        assert "NURTURE_REDIS_URL" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    cli_env["NURTURE_REDIS_URL"] = "http://127.0.0.1:6379"
    result = nurture(["status"], cli_env, tmp_path)
    assert result.returncode == 1
    assert "NURTURE_REDIS_URL='http://127.0.0.1:6379' is not a usable Redis URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_sender_that_is_not_an_address_is_refused_at_start_up(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli_env["NURTURE_FROM_EMAIL"] = "not-an-email"
    result = nurture(["worker", "--processes", "1"], cli_env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("nurture: NURTURE_FROM_EMAIL: 'not-an-email' is not an email")
    assert "Traceback" not in result.stderr


def test_an_outbox_that_cannot_be_written_is_refused_at_start_up(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cli_env["NURTURE_OUTBOX_DIR"] = str(blocker / "outbox")
    started = time.monotonic()
    result = nurture(["worker", "--processes", "1"], cli_env, tmp_path)
    assert result.returncode == 1
    assert f"NURTURE_OUTBOX_DIR={blocker / 'outbox'}: cannot write there" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # refused at start-up, not at the first send


def test_one_json_line_per_touch_and_an_email_within_a_minute(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The quick start on the real CLI: the sample events give an email within a
    minute whatever the day (the quick-start sequence has no send window)."""
    cli_env["NURTURE_LOG_FORMAT"] = "json"
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--processes", "1", "--threads", "2"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        emitted = nurture(["emit", str(ROOT / "examples/events.jsonl")], cli_env, tmp_path)
        assert emitted.returncode == 0, emitted.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((tmp_path / "outbox").glob("*.eml")):
            time.sleep(0.5)
        assert list((tmp_path / "outbox").glob("*quick-start*.eml")), "no email within a minute"
        time.sleep(1)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    sent = [r for r in lines if r.get("outcome") == "sent"]
    touches = [(r["sequence"], r["step"], r["lead_id"]) for r in sent]
    # quick-start has no send window: its email is there at any hour. The other sequences
    # send in their leads' office hours, so during those hours their emails come too.
    assert ("quick-start", "hello", "demo-ann") in touches, touches
    assert len(touches) == len(set(touches))  # one line per touch
    assert len(sent) == len(list((tmp_path / "outbox").glob("*.eml")))  # one per email
    line = sent[touches.index(("quick-start", "hello", "demo-ann"))]
    assert line["level"] == "info"
    assert line["message"] == "quick-start/hello lead demo-ann: sent"
    assert "Traceback" not in stderr
