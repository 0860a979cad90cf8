"""Pausing sequences (issue 12, item 6): ``paused: true`` in a sequence file and
``nurture pause|resume SEQUENCE|--all``; nothing of a paused sequence is sent, its
touches keep their place and go out on resume (spread by the catch-up when long
overdue, as after downtime)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import nurture
from tests.harness import Harness, event
from tests.test_pipeline import INBOUND
from worker.catalog import load_and_check
from worker.cli import _paused_line
from worker.status import collect_status

INLINE_QUEUE = True


def _settle_unparked(h: Harness) -> None:
    """Let the scheduler's look for parked touches come round (once a second)."""
    h.scheduler._unparked_at = 0.0
    h.settle()


def test_nurture_pause_holds_a_sequence_and_resume_sends_in_place(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(catchup_after=3600.0, catchup_spread=600.0)
    pauses = h.rt.store.pauses
    pauses.pause_sequences(["value-first"], h.clock.now().timestamp())
    for i in range(1, 4):
        h.emit(event(f"e{i}", lead_id=f"lead-{i}", email=f"l{i}@example.com", **INBOUND))
    h.settle()
    due = {
        m: d
        for m, d in h.rt.store.schedule.pending(
            [
                e.pending_touch("value-first", f"lead-{i}") or ""
                for i in range(1, 4)
                for e in [h.rt.store.enrollment(f"lead-{i}", "value-first")]
                if e
            ]
        )
    }
    h.advance(timedelta(minutes=11))
    h.advance(timedelta(days=2))
    assert h.sent() == []  # nothing of it is sent while paused
    parked = dict(h.rt.store.schedule.parked())
    assert parked == due  # each touch keeps its own due time
    status = collect_status(h.rt)
    assert status["paused"]["touches_waiting"] == 3
    assert _paused_line(status["paused"]).startswith("paused sequences: value-first (nurture pause")
    # Resumed two days later: the touches, now long overdue, are spread out by the
    # catch-up in their original order instead of going out at once.
    pauses.resume_sequences(["value-first"])
    _settle_unparked(h)
    assert h.rt.store.schedule.parked() == []
    h.advance(timedelta(minutes=11))
    assert sorted(lead for lead, _, _ in h.sent()) == ["lead-1", "lead-2", "lead-3"]
    assert {step for _, _, step in h.sent()} == {"outcome-story"}
    assert h.rt.store.global_counters().get("caught_up") == 3
    assert _paused_line(collect_status(h.rt)["paused"]) == "paused sequences: none"


def test_pause_all_and_paused_true_in_the_file(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    h = make_harness()
    h.rt.store.pauses.pause_sequences(["*"], h.clock.now().timestamp())
    h.emit(event("e1", **INBOUND))
    h.advance(timedelta(minutes=10))
    assert h.sent() == [] and len(h.rt.store.schedule.parked()) == 1
    h.rt.store.pauses.resume_sequences(["*"])
    # Now paused in the file instead (reviewed in git): still nothing goes out.
    path = catalog_dirs["sequences"] / "value-first.yaml"
    path.write_text("paused: true\n" + path.read_text())
    assert h.rt.catalog.reload_if_changed()
    assert h.rt.paused_sequences() == {"value-first"}
    _settle_unparked(h)
    h.advance(timedelta(minutes=1))
    assert h.sent() == []
    assert "paused: true in" in _paused_line(collect_status(h.rt)["paused"])
    path.write_text(path.read_text().replace("paused: true\n", ""))
    assert h.rt.catalog.reload_if_changed()
    _settle_unparked(h)
    h.settle()
    assert [step for _, _, step in h.sent()] == ["outcome-story"]


def test_paused_must_be_true_or_false(
    make_settings: Callable[..., object], catalog_dirs: dict[str, Path]
) -> None:
    path = catalog_dirs["sequences"] / "value-first.yaml"
    path.write_text("paused: yes please\n" + path.read_text())
    loaded, problems = load_and_check(make_settings())  # type: ignore[arg-type]
    assert loaded is None
    [problem] = problems
    assert problem.line == 1 and "paused must be true or false" in problem.message
    assert "paused: true" in problem.fix


@pytest.mark.slow  # starts the CLI as subprocesses
def test_pause_and_resume_commands(
    cli_env: dict[str, str],
    tmp_path: Path,
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return nurture(list(args), cli_env, tmp_path)

    typo = cli("pause", "value-frist")
    assert typo.returncode == 1 and "did you mean `value-first`?" in typo.stderr
    assert cli("pause").returncode == 2
    paused = cli("pause", "value-first")
    assert paused.returncode == 0 and paused.stdout.startswith("paused value-first:")
    assert set(h.rt.store.pauses.paused_sequences()) == {"value-first"}
    status = cli("status")
    assert "paused sequences: value-first (nurture pause since" in status.stdout
    resumed = cli("resume", "--all")
    assert resumed.stdout.startswith("resumed value-first")
    assert h.rt.store.pauses.paused_sequences() == {}
