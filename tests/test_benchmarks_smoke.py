"""The benchmark suite still works: run it at its tiny size and check the report.

Not a timed test: the numbers are not judged, only that every section is there and
carries numbers (see benchmarks/README.md for the real runs).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = (
    "## Targets",
    "## 1. Ingest",
    "## 2. Pipeline",
    "### What bounds it",
    "### Suggestions",
    "## 3. Scheduler at scale",
    "## 4. How the figures grow",
    "## 5. Delivery layer over SendGrid latency",
)


def _section(report: str, heading: str) -> str:
    start = report.index(heading)
    following = [report.find(h, start + 1) for h in SECTIONS if report.find(h, start + 1) > 0]
    return report[start : min(following, default=len(report))]


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*(?:\.\d+)?", text)


@pytest.mark.slow
def test_benchmark_suite_runs_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    raw = tmp_path / "results.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--size",
            "tiny",
            "--out",
            str(out),
            "--json",
            str(raw),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # Correctness only, never wall time: on a loaded machine the tiny run can take
    # minutes, and its numbers are not judged here (the subprocess timeout still bounds it).
    assert completed.returncode == 0, completed.stderr[-3000:]

    report = out.read_text(encoding="utf-8")
    assert report.strip() in completed.stdout  # stdout carries the same report
    assert re.search(r"Environment:\*\* \d+ CPUs .*Python 3\.\d+.*Redis \d", report)
    for heading in SECTIONS:
        assert heading in report, f"missing section {heading!r}"
        body = _section(report, heading)
        assert "|" in body or heading.startswith("###"), f"{heading}: no table"
        assert len(_numbers(body)) >= 3, f"{heading}: no numbers"
    assert not re.search(r"\bnan\b", report, re.IGNORECASE)

    results = json.loads(raw.read_text())
    assert results["fidelity"]["match"], results["fidelity"]["detail"]
    for run in results["http_single"] + results["http_batch"]:
        assert run["errors"] == 0 and run["accepted"] == run["events"]
    for run in results["emit"]:
        assert run["queue_messages"] == run["expected_messages"]
    for run in results["pipeline"]:
        assert run["touches_per_s"] > 0 and run["dead_letters"] == 0
    assert all(run["messages_per_s"] > 0 for run in results["noop"])
    assert results["anatomy"]["round_trips_total"] > 0
    for row in results["delivery"]["rows"]:
        assert all(row[mode] > 0 for mode in results["delivery"]["modes"])
    for level in results["levels"]:
        assert 0 < level["schedule"][0]["schedule_bytes"] < level["state_bytes"]
        for burst in level["spread"] + level["instant"]:
            assert burst["received"] == burst["touches"] and burst["duplicates"] == 0
