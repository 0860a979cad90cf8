"""Smoke test of ``benchmarks.rabbitmq_cost`` on a tiny load: real ``nurture worker``
processes with the queues on RabbitMQ (tests/rabbitmq.py: the machine's node or one of
the session's own, a vhost of the session's own) send 200 touches to the SendGrid
stand-in; every figure of the cost per send is there and positive, and every touch
went out once.

The frame counts follow AMQP 0-9-1's frame format (type, channel, size, payload,
``0xCE``; https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf, section 4.2.3) with
the method ids of pika's ``spec`` (basic.publish 60.40, basic.deliver 60.60, basic.ack
60.80: https://www.rabbitmq.com/amqp-0-9-1-reference#class.basic).
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.common import bench_world
from benchmarks.rabbitmq_cost import FrameCount, measure
from tests.rabbitmq import AmqpTarget

COUNT = 200
TOUCHES_PER_MESSAGE = 20  # the default NURTURE_TOUCHES_PER_MESSAGE


def test_the_cost_per_send_is_measured_and_every_touch_sent_once(
    app_queues: AmqpTarget, tmp_path: Path
) -> None:
    with bench_world(tmp_path, 1, 4) as bench:
        result = measure(bench, app_queues.url, COUNT, rate=0, runs=1, workers=1)
    run = result["runs"][0]
    assert run["received"] == COUNT and run["duplicates"] == 0
    assert run["ledger"] == {"sent": COUNT}
    assert run["rabbitmq_process"] == "beam.smp"
    for part in ("rabbitmq", "redis", "workers"):
        assert run[f"{part}_cpu_ms_per_send"] > 0, part
        assert math.isfinite(run[f"{part}_cpu_ms_per_send_net"]), part
        assert run[f"{part}_idle_cores"] >= 0, part
    # Touches travel in batches of at most 20, each message delivered and acked.
    published = run["to_rabbitmq_publish_per_send"]
    assert 1 / TOUCHES_PER_MESSAGE <= published <= 1
    assert run["from_rabbitmq_deliver_per_send"] == published
    assert run["to_rabbitmq_ack_per_send"] == published  # the consumers' acks
    assert run["from_rabbitmq_ack_per_send"] == published  # publisher confirms
    assert run["to_rabbitmq_bytes_per_send"] > run["to_rabbitmq_body_bytes_per_send"] > 0
    assert run["from_rabbitmq_bytes_per_send"] > 0 and run["body_bytes_per_message"] > 0
    assert result["median"]["rabbitmq_cpu_ms_per_send"] == run["rabbitmq_cpu_ms_per_send"]


def test_frames_are_counted_across_chunk_boundaries() -> None:
    """A publish (method, content header, body) split anywhere still counts once."""
    method = b"\x01\x00\x01\x00\x00\x00\x05" + b"\x00\x3c\x00\x28\x00" + b"\xce"
    header = b"\x02\x00\x01\x00\x00\x00\x02" + b"\x00\x3c" + b"\xce"
    body = b"\x03\x00\x01\x00\x00\x00\x04" + b"abcd" + b"\xce"
    stream = b"AMQP\x00\x00\x09\x01" + method + header + body
    count = FrameCount(outbound=True)
    for i in range(0, len(stream), 3):
        count(stream[i : i + 3])
    assert count.snapshot() == {"bytes": len(stream), "publish": 1, "body_bytes": 4}
