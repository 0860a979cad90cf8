"""The ``nurture`` command as a user runs it: real processes, real Redis."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import redis

from tests.conftest import ROOT, nurture
from worker.enrollment import touch_id
from worker.store import Store
from worker.store.keys import Keys


def test_validate_accepts_the_shipped_examples(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = nurture(["validate"], cli_env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The shipped content links to example.com placeholders: warnings, then the verdict.
    assert result.stdout.splitlines()[-1].startswith("OK: 5 sequences"), result.stdout


def test_validate_names_file_line_and_fix(
    cli_env: dict[str, str], tmp_path: Path, catalog_dirs: dict[str, Path]
) -> None:
    sequence = catalog_dirs["sequences"] / "value-first.yaml"
    sequence.write_text(
        sequence.read_text().replace("template: value/case_study", "tempalte: value/case_study")
    )
    template = catalog_dirs["templates"] / "value" / "guide.j2"
    template.write_text(
        template.read_text().replace("{% block subject %}", "{% block subjet %}", 1)
    )
    result = nurture(["validate"], cli_env, tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        "value-first.yaml:" in line and "tempalte" in line and "template" in line.split("—")[-1]
        for line in lines
    ), result.stdout
    assert any("guide.j2:" in line and "subject" in line for line in lines), result.stdout
    assert "problem(s) found" in result.stderr


def test_emit_refuses_a_bad_file_whole_naming_each_bad_event(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    good = {"id": "g1", "type": "lead.created", "lead": {"id": "l1", "email": "a@example.com"}}
    bad = {"id": "b1", "type": "lead created", "lead": {"id": "l2"}}
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = nurture(["emit", str(path)], cli_env, tmp_path)
    assert result.returncode == 1
    assert "event 1: type:" in result.stderr and "nothing queued" in result.stderr
    assert redis.Redis.from_url(redis_url).exists("nurture:evt:g1") == 0

    result = nurture(["emit", "-"], cli_env, tmp_path, stdin=json.dumps(good))
    assert result.returncode == 0, result.stderr
    assert "queued 1 event(s), 0 duplicate(s)" in result.stdout
    result = nurture(["emit", "-"], cli_env, tmp_path, stdin=json.dumps(good))
    assert "queued 0 event(s), 1 duplicate(s)" in result.stdout


def test_emit_prints_an_error_line_for_an_unsendable_address(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    doc = {"id": "x1", "type": "lead.created", "lead": {"id": "l1", "email": "jörg@exämple.de"}}
    result = nurture(["emit", "-"], cli_env, tmp_path, stdin=json.dumps(doc, ensure_ascii=False))
    assert result.returncode == 1
    assert "nurture emit: -: event 0: lead.email: 'jörg@exämple.de' cannot be sent" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert redis.Redis.from_url(redis_url).exists("nurture:evt:x1") == 0


def test_preview_shows_the_timeline_and_renders_a_step(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = nurture(
        [
            "preview", "value-first", "--lead", str(ROOT / "examples" / "lead.json"),
            "--start", "2026-11-27T15:55:00Z", "--step", "outcome-story",
        ],
        cli_env,
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Friday 16:55 in Copenhagen + 10 min is after 17:00: the window moves it to Monday 09:00.
    assert "Mon 2026-11-30 09:00 CET  outcome-story" in out
    assert "templates/da/value/outcome_story.j2" in out
    assert "Subject:" in out and "/unsubscribe/PREVIEW" in out


def test_status_reports_queues_and_schedule(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = nurture(["status"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scheduled touches: 0" in result.stdout
    assert "dead letters: 0" in result.stdout
    as_json = json.loads(nurture(["status", "--json"], cli_env, tmp_path).stdout)
    assert as_json["queues"]["events"]["ready"] == 0


def test_status_counts_every_unknown_outcome_and_lists_the_earliest(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    """25 sends of unknown outcome spread over buckets: the count is 25, not the 20 listed."""
    store = Store(redis.Redis.from_url(redis_url))
    for n in range(25):
        store.ledger.record_unknown(
            touch_id("value-first", 1, "intro", f"lead-{n}"), 1_700_000_000 + n
        )
    result = nurture(["status"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "outcome unknown (not resent): 25 (the earliest 20 below)" in result.stdout
    listed = [
        line for line in result.stdout.splitlines() if "value-first" in line and "lead-" in line
    ]
    assert len(listed) == 20 and "lead-0" in listed[0] and "lead-19" in listed[-1]
    as_json = json.loads(nurture(["status", "--json"], cli_env, tmp_path).stdout)
    assert as_json["unknown_count"] == 25 and len(as_json["unknown"]) == 20


def test_a_bad_setting_stops_start_up_with_one_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = nurture(["status"], {**cli_env, "NURTURE_DELIVERY": "pigeon"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nurture: NURTURE_DELIVERY: Input should be 'outbox' or 'sendgrid'"
    ]


def test_worker_refuses_to_start_without_sender(cli_env: dict[str, str], tmp_path: Path) -> None:
    del cli_env["NURTURE_FROM_EMAIL"]
    result = nurture(["worker"], cli_env, tmp_path)
    assert result.returncode == 1
    assert "NURTURE_FROM_EMAIL" in result.stderr


def test_embedded_redis_when_no_url_is_set(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Without NURTURE_REDIS_URL a local redis-server is started and then reused."""
    local = {k: v for k, v in cli_env.items() if k != "NURTURE_REDIS_URL"}
    local["NURTURE_STATE_DIR"] = str(tmp_path / "state")
    try:
        first = nurture(["status"], local, tmp_path)
        assert first.returncode == 0, first.stderr
        port = (tmp_path / "state" / "redis" / "redis.port").read_text().strip()
        assert f"redis://127.0.0.1:{port}/0" in first.stdout
        second = nurture(["status"], local, tmp_path)
        assert f"redis://127.0.0.1:{port}/0" in second.stdout  # the same server, reused
    finally:
        port_file = tmp_path / "state" / "redis" / "redis.port"
        if port_file.exists():
            client = redis.Redis(port=int(port_file.read_text()))
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(nosave=True)


def test_forget_erases_a_person_by_address_and_by_lead_id(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    """``nurture forget``: a person's data leaves Redis; only the keyed hash stays."""
    client = redis.Redis.from_url(redis_url)
    Store(client).save_lead(
        "l1", {"id": "l1", "email": "ann@example.com", "first_name": "Ann"}, old_email=None
    )
    result = nurture(["forget", "Ann@Example.com"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "erased 1 lead(s): l1 and its keyed hash suppressed" in result.stdout
    everything = [
        *(k.decode() for k in client.scan_iter()),
        *(repr(client.hgetall(Keys().lead("l1"))),),
        *(repr(client.hgetall(Keys().email_index("ann@example.com"))),),
    ]
    assert not any("ann@example.com" in item.lower() for item in everything), everything
    assert Store(client).suppressed_count() == 1
    result = nurture(["forget", "l1"], cli_env, tmp_path)
    assert "erased 0 lead(s)" in result.stdout  # already erased
    result = nurture(["forget", "jörg@exämple.de"], cli_env, tmp_path)
    assert result.returncode == 1 and "cannot be sent" in result.stderr
    assert "Traceback" not in result.stderr
