"""The Monday-burst and end-to-end benchmarks still work: run each at a toy size.

Not timed tests: only that they finish, every message arrives exactly once and the
tables carry numbers (benchmarks/README.md describes the real runs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(module: str, *args: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    raw = tmp_path / f"{module}.json"
    completed = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args, "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout, json.loads(raw.read_text())


@pytest.mark.slow
def test_monday_burst_benchmark_runs_at_toy_size(tmp_path: Path) -> None:
    table, result = _run(
        "burst", "--count", "120", "--workdir", str(tmp_path / "work"), tmp_path=tmp_path
    )
    assert "| 120 | 150 ms |" in table
    assert result["received"] == 120 and result["duplicates"] == 0
    assert 0 < result["lateness_p50_s"] <= result["lateness_p95_s"] <= result["lateness_max_s"]
    assert result["drain_s"] > 0 and result["order"]["overtaken"] >= 0
    assert result["probe_events"] >= 1


@pytest.mark.slow
def test_end_to_end_benchmark_runs_at_toy_size(tmp_path: Path) -> None:
    table, result = _run(
        "e2e",
        "--count",
        "60",
        "--latencies",
        "150",
        "--workdir",
        str(tmp_path / "work"),
        tmp_path=tmp_path,
    )
    assert "| outbox |" in table and "SendGrid stand-in, 150 ms" in table
    assert "raw dramatiq no-op" in table
    for row in result["rows"]:
        assert row["emails_out"] == row["leads"] == 60 and row["leads_per_s"] > 0
    assert result["noop"][0]["messages_per_s"] > 0
