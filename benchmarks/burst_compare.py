"""The Monday burst, before and after a change, in one run (:mod:`benchmarks.burst`).

On a shared machine absolute figures move with other people's load; two versions
measured in alternating runs on the same Redis and stand-in move together. ``base``
(a git ref, default ``main``) is exported to a temporary directory and its worker
runs from there, with an interpreter whose path puts that directory first and then this
environment's packages (a venv with a ``.pth`` file: nothing is installed); this checkout
is the other version. Each of ``runs`` repetitions runs
both, alternating which goes first; the report gives every run and the medians.

    python -m benchmarks.burst_compare [--base main] [--count 10000] [--runs 3]
        [--latency 0.15] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.burst import monday_burst
from benchmarks.common import ROOT, bench_world


def export(ref: str, into: Path) -> Path:
    """The tree of ``ref`` written to ``into`` (``git archive``; the index is untouched)."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def base_python(src: Path, into: Path) -> Path:
    """A venv whose ``worker`` is the one in ``src``, with this environment's packages
    (not its editable install of this checkout: a ``.pth`` line adds a directory without
    running the ``.pth`` files in it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(into)], check=True)
    here = next(p for p in sys.path if p.endswith("site-packages"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = into / "lib" / version / "site-packages"
    (site / "base.pth").write_text(f"{src}\n{here}\n", encoding="utf-8")
    python = into / "bin" / "python"
    found = module_file(python, "worker", into)
    if not found.startswith(str(src)):
        raise RuntimeError(f"the base interpreter imports {found}, not the code in {src}")
    return python


def module_file(python: Path, module: str, cwd: Path) -> str:
    """The file ``python`` imports ``module`` from (run in ``cwd``, no PYTHONPATH)."""
    return subprocess.run(
        [str(python), "-c", f"import {module} as m; print(m.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "")},
    ).stdout.strip()


def render(rows: list[dict[str, Any]], base: str) -> str:
    """Markdown: one line per run, then the medians per version."""
    lines = [
        "| version | run | drain | touches/s | lateness p50 / p95 | events p50 / max "
        "| declines p50 / max | received once | load average |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['version']} | {row['run'] + 1} | {row['drain_s']:.1f} s "
            f"| {row['touches_per_s']:,.0f} "
            f"| {row['lateness_p50_s']:.1f} / {row['lateness_p95_s']:.1f} s "
            f"| {row['probe_p50_s']:.2f} / {row['probe_max_s']:.2f} s "
            f"| {row['decline_p50_s']:.2f} / {row['decline_max_s']:.2f} s "
            f"| {row['received']:,} of {row['touches']:,}, {row['duplicates']} twice "
            f"| {row['load_start']:.1f} → {row['load_end']:.1f} |"
        )
    lines += ["", "| version | median drain | median touches/s |", "|---|---|---|"]
    for version in (base, "this checkout"):
        mine = [r for r in rows if r["version"] == version]
        lines.append(
            f"| {version} | {median(r['drain_s'] for r in mine):.1f} s "
            f"| {median(r['touches_per_s'] for r in mine):,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.burst_compare", description=__doc__)
    parser.add_argument("--base", default="main", help="git ref of the other version")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.15, help="stand-in latency, s")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="nurture-bench-compare-"))
    base = base_python(export(args.base, workdir / "base-src"), workdir / "base-venv")
    versions: list[tuple[str, Path | None]] = [(args.base, base), ("this checkout", None)]
    rows: list[dict[str, Any]] = []
    with bench_world(workdir / "run", 1, 8) as bench:
        for run in range(args.runs):
            for version, src in versions if run % 2 == 0 else versions[::-1]:
                result = monday_burst(
                    bench, args.count, latency=args.latency, lead_in=8.0, worker_python=src
                )
                result.update(version=version, run=run)
                rows.append(result)
                print(
                    f"  run {run + 1}/{args.runs}, {version}: {result['drain_s']:.1f} s, "
                    f"{result['received']} received, {result['duplicates']} twice, "
                    f"load {result['load_start']:.1f} → {result['load_end']:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    print(render(rows, args.base))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
