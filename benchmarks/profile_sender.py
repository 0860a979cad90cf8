"""Profile the sender with pyinstrument: where a batch of due touches spends its time.

``count`` due touches are sent in this process by the real ``TouchSender`` in batches
of ``Tuning.touches_per_message`` (as one ``send_touches`` message each), to the
SendGrid stand-in answering after ``latency`` seconds. Prints the median wall time per
batch and per touch, and pyinstrument's call tree (the calling thread; the SendGrid
pool threads show up as the time the batch waits in ``send_many``).

    python -m benchmarks.profile_sender [--count 600] [--latency 0.15] [--html out.html]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median

from pyinstrument import Profiler

from benchmarks.common import bench_world
from benchmarks.state import write_leads
from worker.runtime import Runtime, Tuning
from worker.sending import Touch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_sender")
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.15, help="stand-in latency, s")
    parser.add_argument("--html", type=Path, default=None)
    args = parser.parse_args(argv)
    batch = Tuning().touches_per_message
    workdir = Path(tempfile.mkdtemp(prefix="nurture-profile-"))
    with bench_world(workdir, 1, 8) as bench:
        bench.flush()
        bench.standin.reset()
        bench.standin.latency(args.latency)
        warmup = batch
        write_leads(bench.redis_url, "prof", range(args.count + warmup), lambda i: time.time() - 1)
        runtime = Runtime(bench.settings())
        try:
            claimed = runtime.store.claim_due(time.time(), args.count + warmup, 300)
            touches = [Touch(member, due) for member, due in claimed]
            runtime.sender.send_batch(touches[:warmup])  # connections, scripts, templates
            walls: list[float] = []
            profiler = Profiler(interval=0.0005)
            with profiler:
                for start in range(warmup, len(touches), batch):
                    began = time.perf_counter()
                    runtime.sender.send_batch(touches[start : start + batch])
                    walls.append(time.perf_counter() - began)
        finally:
            runtime.close()
    per_batch = median(walls)
    print(
        f"{args.count} touches at {args.latency * 1000:.0f} ms, batches of {batch}: "
        f"median {per_batch * 1000:.1f} ms per batch, {per_batch / batch * 1000:.2f} ms "
        f"per touch ({batch / per_batch:.0f} touches/s on one thread)"
    )
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
