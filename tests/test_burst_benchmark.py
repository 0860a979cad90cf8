"""The Monday-burst benchmark and the before/after comparison still work, at toy size.

Not timed: the numbers are not judged, only that the real default ``nurture worker``
drains the burst with every lead sent exactly once (stand-in receipts and ledger), the
other traffic was probed, and the report carries it (see benchmarks/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.burst import monday_burst, render_burst
from benchmarks.burst_compare import base_python, export, module_file
from benchmarks.common import bench_world

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_burst_drains_every_touch_once_and_probes_events_and_declines(tmp_path: Path) -> None:
    with bench_world(tmp_path / "bench", 1, 8) as bench:
        result = monday_burst(bench, 300, latency=0.05, lead_in=5.0)
    assert result["received"] == 300 and result["duplicates"] == 0
    assert result["ledger"] == {"sent": 300}
    assert result["order"]["overtaken"] == 0
    assert result["probe_events"] == result["decline_events"] >= 1
    assert result["decline_max_s"] < 60  # every decline enrolled (inf when it timed out)
    assert "300 of 300, 0 twice; ledger: 300 sent" in render_burst(result)


def test_compare_runs_the_base_ref_from_its_own_tree(tmp_path: Path) -> None:
    python = base_python(export("HEAD", tmp_path / "src"), tmp_path / "venv")
    found = module_file(python, "worker.sending", tmp_path)
    assert found == str(tmp_path / "src" / "worker" / "sending.py")
    assert module_file(Path(sys.executable), "worker.sending", tmp_path) == str(
        ROOT / "worker" / "sending.py"
    )
