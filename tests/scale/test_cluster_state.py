"""The worker's state on a real 3-primary Redis Cluster (``NURTURE_REDIS_CLUSTER=1``,
tests/cluster.py): every Lua script and every transaction of the store runs there, which
a cluster only allows on keys of one slot (redis-py refuses a cross-slot script or
transaction before sending it, the server answers ``-CROSSSLOT``), so running them is
the check. The layout's keys spread over every primary; the same layout runs on a
single Redis (the rest of the suite).

References: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
(hash tags; "-CROSSSLOT Keys in request don't hash to the same slot") and
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/ (a script
must receive every key it touches in KEYS; in a cluster all in one slot).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from dramatiq.brokers.stub import StubBroker
from redis.cluster import RedisCluster

from tests.cluster import ClusterProcess
from tests.harness import Harness, event
from tests.test_pipeline import INBOUND, VALUE_FIRST
from worker.enrollment import TouchRef
from worker.errors import SettingsError
from worker.runtime import Runtime
from worker.settings import Settings
from worker.status import collect_status
from worker.store import Store, layout1_markers
from worker.suppression import suppress_address, unsubscribe_lead

INLINE_QUEUE = True  # dramatiq's StubBroker: queues are not the subject here

LEADS = 12


@pytest.fixture
def on_cluster(
    make_harness: Callable[..., Harness], redis_cluster: ClusterProcess
) -> Callable[..., Harness]:
    """Harnesses whose state is on the test cluster."""

    def make(**overrides: object) -> Harness:
        return make_harness(redis_url=redis_cluster.url, redis_cluster=True, **overrides)

    return make


def keys_per_primary(cluster: ClusterProcess) -> list[int]:
    counts = []
    for port in cluster.ports:
        node = cluster.node_client(port)
        counts.append(int(node.dbsize()))
        node.close()
    return counts


def test_the_core_flow_runs_every_script_on_the_cluster(
    on_cluster: Callable[..., Harness], redis_cluster: ClusterProcess
) -> None:
    h = on_cluster()
    assert isinstance(h.rt.redis, RedisCluster)
    h.rt.check_redis()  # records the layout
    leads = [f"lead-{i}" for i in range(LEADS)]
    for i, lead in enumerate(leads):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.run_until(h.clock.now().timestamp() + 40 * 86400)
    sent = h.sent()
    for lead in leads:
        assert [step for (who, seq, step) in sent if who == lead and seq == "value-first"] == (
            VALUE_FIRST
        )
        enrollment = h.rt.store.enrollment(lead, "value-first")
        assert enrollment is not None and enrollment.state == "done"
    # Counters and stats written by advance.lua in each lead's bucket, summed by readers.
    assert h.rt.store.stats()["value-first"]["outcome-story"]["sent"] == LEADS
    assert h.rt.store.global_counters()["sent"] == len(sent)
    status = collect_status(h.rt)
    assert status["schedule"]["scheduled"] == 0 and status["schedule"]["claimed"] == 0
    # Leads sit in buckets on every primary; nothing of the untagged layout exists.
    assert all(count > 0 for count in keys_per_primary(redis_cluster))
    client = h.rt.redis
    assert not any(client.exists(key) for key in layout1_markers("nurture"))


def test_every_other_store_script_and_transaction_runs_on_the_cluster(
    on_cluster: Callable[..., Harness],
) -> None:
    h = on_cluster(frequency_cap=48 * 3600.0)
    store = h.rt.store
    for i in range(3):
        h.emit(event(f"e{i}", lead_id=f"lead-{i}", email=f"lead-{i}@example.com", **INBOUND))
    h.settle()
    now = h.clock.now().timestamp()
    touch = store.scheduled_for("lead-0")[0][0]
    # Claims over every shard, a reschedule, parking and unparking (transactions).
    assert [m for m, _ in store.claim_due(now + 3600, 10, 60)] != []
    store.schedule.reschedule(touch, now + 60, note='{"kind": "skip"}')
    store.schedule.park(touch, now + 60)
    assert store.schedule.parked() == [(touch, now + 60)]
    store.schedule.unpark(store.schedule.parked())
    assert store.schedule.due_at([touch]) == [now + 60]
    # The ledger's scripts: reserve (with the address's suppression passed in), release,
    # reopen, and an unknown outcome.
    ref = TouchRef.parse(touch)
    enrollment = store.enrollment(ref.lead_id, ref.sequence)
    assert enrollment is not None
    assert store.reserve_send(touch, "lead-0@example.com", now, 0, False, 120).verdict == "ok"
    assert store.ledger.release(touch, f"dead:{now}", now, "")
    assert store.ledger.reopen(touch, now) is None
    store.ledger.record_unknown(touch, now)
    assert store.unknown_outcomes() == [(touch, now)]
    # Conversions and variants (transactions of the lead's bucket).
    store.conversions.record_variant("lead-0", ref.sequence, ref.generation, ref.step, "a")
    store.conversions.count(ref.sequence, "demo.booked", None)
    stats = store.conversions.sequence_stats(ref.sequence)
    assert stats["_goal"]["converted"] == 1 and stats[f"{ref.step}@a"]["sent"] == 1
    # Suppressions and the email index (other slots than the leads): an address's
    # suppression stops a send although the lead's flag is not set yet.
    assert store.suppress_email("lead-1@example.com", "bounce")
    touch1 = store.scheduled_for("lead-1")[0][0]
    assert store.reserve_send(touch1, "lead-1@example.com", now, 0, False, 120).verdict == (
        "suppressed"
    )
    assert suppress_address(h.rt, "lead-1@example.com", "bounce") == ["lead-1"]
    assert store.suppressed_count() == 1
    assert unsubscribe_lead(h.rt, "lead-2")
    h.settle()
    # Erasure: the lead's keys in one transaction, the index entry apart.
    assert h.rt.processor.forget("lead-0@example.com") == ["lead-0"]
    assert store.leads_by_email("lead-0@example.com") == []
    assert sorted(store.timeline.lead_ids()) == ["lead-1", "lead-2"]
    # Catch-up after downtime over every shard.
    h.clock.advance(timedelta(days=3))
    assert h.scheduler.catch_up(h.clock.now().timestamp()) >= 0


def test_a_worker_set_to_another_number_of_shards_refuses_to_start(
    on_cluster: Callable[..., Harness], make_settings: Callable[..., Settings]
) -> None:
    h = on_cluster()
    h.rt.check_redis()
    other = Runtime(
        make_settings(redis_url=h.rt.redis_url, redis_cluster=True, state_shards=64),
        load_catalog=False,
        broker=StubBroker(),  # type: ignore[no-untyped-call]
    )
    try:
        with pytest.raises(SettingsError, match="NURTURE_STATE_SHARDS=256"):
            other.check_redis()
    finally:
        other.redis.close()
    assert Store(h.rt.redis).layout() == {
        "version": "3",
        "shards": "256",
        "email_buckets": "131072",
    }
