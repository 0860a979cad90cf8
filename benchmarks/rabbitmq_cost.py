"""What one send costs with the queues on RabbitMQ: the RabbitMQ node's CPU, the
messages and bytes it carries, Redis's CPU and the worker processes' CPU.

Each run: ``count`` leads are written enrolled in the benchmark sequence (the burst
benchmark's direct writer: what the event pipeline stores), their first touches put due
``rate`` a second (``0``: all at once), and ``workers`` real ``nurture worker`` processes
(``--processes 1``, 8 threads each) with ``NURTURE_BROKER_URL`` send them to the
SendGrid stand-in (150 ms), state on the run's Redis (AOF everysec). From the moment the
first touch falls due until every touch is accepted by the stand-in (plus one second for
the last acknowledgements) the run reads:

* the RabbitMQ node's CPU time: ``utime + stime`` of its ``beam.smp`` in
  ``/proc/<pid>/stat`` (https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html), the
  pid found as the owner of the socket listening on the AMQP port
  (``/proc/net/tcp``, https://www.kernel.org/doc/Documentation/networking/proc_net_tcp.txt);
* Redis's CPU time (``INFO cpu``: ``used_cpu_sys + used_cpu_user``) and the worker
  processes' (``/proc/<pid>/stat``);
* what the workers and RabbitMQ say to each other: the workers talk to RabbitMQ through
  a loopback forwarder (tests/tcp_proxy.py) that counts AMQP 0-9-1 frames (type, channel,
  size, payload, ``0xCE``; spec section 4.2.3,
  https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf): ``basic.publish`` and
  ``basic.deliver`` methods, ``basic.ack`` both ways (publisher confirms and consumer
  acks), content body bytes, and all bytes each way. Method ids from pika's ``spec``.

The idle cost (workers connected, nothing due: heartbeats, the schedulers' empty scans)
is measured for a few seconds before each run and given per second, and each CPU figure
per send twice: gross (at this rate) and net of the idle cost (what one more send adds).
Every touch must be received by the stand-in once and end ``sent`` in the ledger.

By default the run starts a RabbitMQ node of its own (tests/rabbitmq.py, Debian's
``rabbitmq-server`` on free ports), so no one else's traffic is in its CPU time;
``--amqp-url`` uses a running one instead (give it an empty vhost of its own).

    python -m benchmarks.rabbitmq_cost --count 2000 --rates 100 0 --runs 3 \\
        --json benchmarks/rabbitmq_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pika import spec

from benchmarks.burst import ledger_states, put_due
from benchmarks.common import Bench, bench_world, median, proc_cpu_seconds, wait_until
from benchmarks.state import write_leads
from tests.rabbitmq import start_rabbitmq
from tests.tcp_proxy import TcpProxy

TAG = "burst"  # the lead ids the burst benchmark's writer and ledger reader use
IDLE_SECONDS = 3.0
LATENCY = 0.15
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
#: (frame type, class and method index) -> name of the count.
METHODS = {
    spec.Basic.Publish.INDEX: "publish",
    spec.Basic.Deliver.INDEX: "deliver",
    spec.Basic.Ack.INDEX: "ack",
}


class FrameCount:
    """AMQP 0-9-1 frames in one direction of one connection, parsed as they pass."""

    def __init__(self, outbound: bool) -> None:
        self.outbound = outbound
        self.counts: Counter[str] = Counter()
        self._buffer = b""
        self._header = outbound  # a client opens with the protocol header
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self._lock:
            self.counts["bytes"] += len(data)
            self._buffer += data
            if self._header and len(self._buffer) >= len(PROTOCOL_HEADER):
                if self._buffer.startswith(PROTOCOL_HEADER):
                    self._buffer = self._buffer[len(PROTOCOL_HEADER) :]
                self._header = False
            self._frames()

    def _frames(self) -> None:
        while len(self._buffer) >= 7:
            kind, _channel, size = struct.unpack_from(">BHI", self._buffer)
            if len(self._buffer) < 8 + size:
                return
            if kind == spec.FRAME_METHOD:
                (index,) = struct.unpack_from(">I", self._buffer, 7)
                if index in METHODS:
                    self.counts[METHODS[index]] += 1
            elif kind == spec.FRAME_BODY:
                self.counts["body_bytes"] += size
            self._buffer = self._buffer[8 + size :]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class AmqpTap:
    """Every connection's frame counts; ``observe`` is the forwarder's observer."""

    def __init__(self) -> None:
        self.sinks: list[FrameCount] = []
        self._lock = threading.Lock()

    def observe(self, outbound: bool) -> Callable[[bytes], None]:
        sink = FrameCount(outbound)
        with self._lock:
            self.sinks.append(sink)
        return sink

    def totals(self) -> dict[str, int]:
        """``to_`` (workers to RabbitMQ) and ``from_`` counts, summed."""
        out: Counter[str] = Counter()
        with self._lock:
            sinks = list(self.sinks)
        for sink in sinks:
            side = "to_" if sink.outbound else "from_"
            for name, value in sink.snapshot().items():
                out[side + name] += value
        return dict(out)


def listening_pid(port: int) -> int:
    """The pid of the process listening on TCP ``port`` (e.g. RabbitMQ's ``beam.smp``):
    the socket's inode from ``/proc/net/tcp{,6}``, then the process holding it.

    Raises:
        RuntimeError: When nothing listens there or its process cannot be read.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue  # gone, or another user's (run as that user or root)
    raise RuntimeError(
        f"no process found listening on port {port} whose sockets this user may read: "
        "run the benchmark as the RabbitMQ node's user or as root"
    )


def proxied(url: str, port: int) -> str:
    """``url`` with its port replaced (the forwarder's)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def _sample(bench: Bench, procs: list[Any], node_pid: int, tap: AmqpTap) -> dict[str, float]:
    return {
        "at": time.monotonic(),
        "rabbitmq": proc_cpu_seconds(node_pid),
        "redis": bench.redis_cpu(),
        "workers": sum(proc.cpu() for proc in procs),
        **tap.totals(),
    }


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


def one_run(bench: Bench, amqp_url: str, count: int, rate: float, workers: int) -> dict[str, Any]:
    """One run of ``count`` touches; see the module docstring for what is measured."""
    node_port = urlsplit(amqp_url).port or 5672
    node_pid = listening_pid(node_port)
    bench.flush()
    bench.standin.reset()
    bench.standin.record(False)
    bench.standin.latency(LATENCY)
    tap = AmqpTap()
    with TcpProxy(node_port, observe=tap.observe) as proxy:
        env = bench.env(NURTURE_BROKER_URL=proxied(amqp_url, proxy.port))
        procs = bench.start_workers(workers, env=env)
        try:
            later = time.time() + 86_400  # nothing due while writing
            write_leads(bench.redis_url, TAG, range(count), lambda _: later)
            start = _sample(bench, procs, node_pid, tap)
            time.sleep(IDLE_SECONDS)
            idle = _delta(start, _sample(bench, procs, node_pid, tap))
            first_due = time.time() + 1.0
            put_due(bench, {i: first_due + (i / rate if rate else 0.0) for i in range(count)})
            time.sleep(max(0.0, first_due - time.time()))
            before = _sample(bench, procs, node_pid, tap)
            limit = 120 + (count / rate if rate else 0) + count / 20
            what = f"the stand-in to accept {count} touches"
            wait_until(lambda: bench.standin.accepted() >= count, limit, what, interval=0.1)
            time.sleep(1.0)  # the last messages' acknowledgements
            used = _delta(before, _sample(bench, procs, node_pid, tap))
        finally:
            bench.stop(procs)
    seen = Counter(lead for lead, _ in bench.standin.receipts() if lead.startswith(f"{TAG}-"))
    result = _figures(count, rate, seen, ledger_states(bench, count), idle, used, node_pid)
    result["load_average"] = os.getloadavg()[0]  # the machine may be shared
    return result


def _figures(
    count: int,
    rate: float,
    seen: Counter[str],
    ledger: dict[str, int],
    idle: dict[str, float],
    used: dict[str, float],
    node_pid: int,
) -> dict[str, Any]:
    sent = sum(seen.values())
    per = max(sent, 1)
    out: dict[str, Any] = {
        "touches": count,
        "rate_per_s": rate,
        "received": len(seen),
        "duplicates": sent - len(seen),
        "ledger": ledger,
        "seconds": used["at"],
        "rabbitmq_process": Path(f"/proc/{node_pid}/comm").read_text().strip(),
    }
    for part in ("rabbitmq", "redis", "workers"):
        idle_rate = idle[part] / idle["at"]
        out[f"{part}_idle_cores"] = idle_rate
        out[f"{part}_cpu_ms_per_send"] = used[part] * 1000 / per
        out[f"{part}_cpu_ms_per_send_net"] = (used[part] - idle_rate * used["at"]) * 1000 / per
    for name in ("publish", "deliver", "body_bytes", "bytes", "ack"):
        for side in ("to_", "from_"):
            if side + name in used:
                out[f"{side}rabbitmq_{name}_per_send"] = used[side + name] / per
    out["body_bytes_per_message"] = used.get("to_body_bytes", 0) / max(used.get("to_publish", 0), 1)
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every figure over the runs."""
    numbers = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {key: median([run[key] for run in runs]) for key in numbers}


@contextmanager
def rabbitmq(workdir: Path, url: str | None) -> Iterator[str]:
    """``url``, or a RabbitMQ node of the run's own (stopped afterwards)."""
    if url:
        yield url
        return
    node = start_rabbitmq(workdir / "rabbitmq")
    try:
        yield node.url("/")
    finally:
        node.stop()


def measure(
    bench: Bench, amqp_url: str, count: int, rate: float, runs: int, workers: int
) -> dict[str, Any]:
    """``runs`` runs and their medians."""
    results = [one_run(bench, amqp_url, count, rate, workers) for _ in range(runs)]
    return {"runs": results, "median": summary(results)}


def render(result: dict[str, Any]) -> str:
    m = result["median"]
    return "\n".join(
        [
            f"{m['touches']:.0f} touches at {m['rate_per_s']:g}/s (0: all at once), medians "
            f"of {len(result['runs'])} runs, load average {m['load_average']:.1f}",
            "| per send | gross | net of idle | idle (cores) |",
            "|---|---|---|---|",
            *(
                f"| {part} CPU | {m[f'{part}_cpu_ms_per_send']:.3f} ms | "
                f"{m[f'{part}_cpu_ms_per_send_net']:.3f} ms | {m[f'{part}_idle_cores']:.3f} |"
                for part in ("rabbitmq", "redis", "workers")
            ),
            f"messages published / delivered per send: {m['to_rabbitmq_publish_per_send']:.3f}"
            f" / {m['from_rabbitmq_deliver_per_send']:.3f}; bytes to / from RabbitMQ per send:"
            f" {m['to_rabbitmq_bytes_per_send']:.0f} / {m['from_rabbitmq_bytes_per_send']:.0f};"
            f" body per message: {m['body_bytes_per_message']:.0f} B",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rabbitmq_cost", description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[100.0], help="touches due per s; 0: at once"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="nurture worker processes")
    parser.add_argument("--amqp-url", help="a running RabbitMQ (an empty vhost of its own)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nurture-bench-rabbitmq-"))
    with rabbitmq(workdir, args.amqp_url) as url, bench_world(workdir, args.workers, 8) as bench:
        results = [
            measure(bench, url, args.count, rate, args.runs, args.workers) for rate in args.rates
        ]
    print("\n\n".join(render(result) for result in results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
