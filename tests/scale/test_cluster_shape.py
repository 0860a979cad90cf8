"""The shape of the load on a Redis Cluster, checked in every full run (issue 16, item 4):
``benchmarks.cluster_shape.measure`` end to end on a small load — the shipped example
leads ×10 through the real pipeline, state on a real cluster (tests/cluster.py), queues
on RabbitMQ (tests/rabbitmq.py) with real dramatiq workers, every sequence run to its
end, every command each primary runs counted with ``MONITOR``
(https://redis.io/docs/latest/commands/monitor/) — with 3 primaries and with 1.

The bounds describe the shape, with margins, not today's exact counts. Which of them
depend on the key layout (and move when it changes, e.g. one hash per lead):
``MAX_COMMANDS_PER_TOUCH`` (a count of commands); the key and primary shares are layout
independent as long as no key is shared by all leads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cluster_shape import measure
from tests.cluster import ClusterProcess, start_cluster
from tests.rabbitmq import AmqpTarget

COPIES = 10  # 40 leads, 180 sends
#: No key above this share of all commands (issue 16: "no key above a few percent").
#: Measured: 0.27 % (nurture:schedulers, the heartbeats; then schedule shards 0.24 %).
MAX_KEY_SHARE = 0.03
#: Nor of the sends' own commands (the schedulers' fixed scans apart, which dilute a hot
#: key in a small load). Measured: 1.24 % (nurture:schedulers), 0.97 %
#: (nurture:paused:delivery), each lead's keys 0.59 %; one global counters hash again
#: would take ~6 %.
MAX_KEY_SHARE_OF_SENDS = 0.03
#: Each of 3 primaries carries this range of the sends' commands. Measured: 34 / 37 / 29 %.
PRIMARY_SHARE = (0.20, 0.50)
#: Commands per sent touch, all primaries (layout dependent). Measured: 26.4.
MAX_COMMANDS_PER_TOUCH = 40.0


@pytest.mark.slow
def test_no_hot_key_and_every_primary_carries_a_share(
    redis_cluster: ClusterProcess, app_queues: AmqpTarget, tmp_path: Path
) -> None:
    """About a minute: two runs of ~20 s (3 primaries, then 1) and the clusters' starts."""
    three = measure(redis_cluster, COPIES, tmp_path / "three", broker_url=app_queues.url)
    single = start_cluster(tmp_path / "one-primary", 1)
    try:
        one = measure(single, COPIES, tmp_path / "one", broker_url=app_queues.url)
    finally:
        single.stop()

    # The same sends on both, each once.
    assert three["sent"] > 0 and three["sent_twice"] == 0
    assert one["sent"] == three["sent"] and one["sent_twice"] == 0
    for result in (three, one):
        busiest = result["busiest_keys"][0]
        assert busiest["share"] < MAX_KEY_SHARE, result["busiest_keys"]
        busiest = result["busiest_keys_of_sends"][0]
        assert busiest["share"] < MAX_KEY_SHARE_OF_SENDS, result["busiest_keys_of_sends"]
        assert result["per_touch_total"] < MAX_COMMANDS_PER_TOUCH, result

    # Three primaries share the sends' commands; none idles, none carries most.
    assert three["primaries"] == 3
    low, high = PRIMARY_SHARE
    assert all(low <= share <= high for share in three["per_touch_share"]), three
    # More primaries split the work without adding to it (measured: 26.38 and 26.36).
    assert three["per_touch_total"] == pytest.approx(one["per_touch_total"], rel=0.05)
    # The schedulers' fixed scans (two per shard and tick) split evenly too: the shards'
    # tags sit 85 / 85 / 86 in the slot ranges (measured: 173 / 178 / 173 against 530).
    assert sum(three["per_tick"]) == pytest.approx(one["per_tick"][0], rel=0.05)
    assert all(share >= 0.30 * sum(three["per_tick"]) for share in three["per_tick"])
