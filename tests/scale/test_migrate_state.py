"""``nurture migrate state``: an install in an older key layout moves to the current one
(3: bucketed, one hash per lead) without losing a scheduled touch; the move is resumable
after a crash, idempotent, fenced against workers, and its dry run only counts.

* layout 1 (untagged, single Redis) -> 2 -> 3;
* layout 2 (four keys per lead: ``lead``, ``enr``, ``sent``, ``recv``) -> 3, on a single
  Redis and on the 3-primary Redis Cluster.

The older states are made from a real run: leads go through the real pipeline (layout
3), then :func:`to_layout2` splits each lead's hash into the four keys layout 2 wrote,
and :func:`to_layout1` writes the same data under the names and types layout 1 used
(``nurture:lead:<id>``, one ``nurture:sched`` zset, ``nurture:email:<address>`` sets,
``nurture:supph:<hash>`` / ``nurture:supp:<address>`` strings, the
``nurture:suppressed`` set...), as the code before lead buckets wrote them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from tests.chaos.procs import nurture_command
from tests.cluster import ClusterProcess, redis_cli
from tests.harness import Harness, event
from tests.test_pipeline import INBOUND, VALUE_FIRST
from worker.errors import SettingsError
from worker.migrate import migrate_state
from worker.store import Store
from worker.store import layout_migration as migration
from worker.store.keys import EMAIL_BUCKETS
from worker.suppression import suppress_address

INLINE_QUEUE = True

LEADS = [f"lead-{i}" for i in range(30)]


def to_layout2(store: Store, lead_ids: list[str]) -> None:
    """Split each lead's hash into layout 2's four keys, as that version wrote them:
    ``lead`` (``data`` and the flags), ``enr`` (sequence -> enrollment), ``sent``
    (ledger field -> entry), ``recv`` (a set of content ids)."""
    client, keys = store.redis, store.keys
    for lead_id in lead_ids:
        old = {kind: keys.per_lead(kind, lead_id) for kind in migration.FOLDED_KINDS}
        for raw, value in client.hgetall(keys.lead(lead_id)).items():
            name = raw.decode()
            if name.startswith("e:"):
                client.hset(old["enr"], name[2:], value)
            elif name.startswith("l:"):
                client.hset(old["sent"], name[2:], value)
            elif name == "r":
                client.sadd(old["recv"], *value.decode().split(","))
            else:
                client.hset(old["lead"], "data" if name == "d" else name, value)
        client.delete(keys.lead(lead_id))
    client.hset(keys.layout, "version", "2")


def to_layout1(store: Store, lead_ids: list[str]) -> None:
    """Rewrite the store's layout-3 state as layout 1 had it (see the module docstring)."""
    client, keys, old = store.redis, store.keys, store.keys.prefix
    to_layout2(store, lead_ids)
    for lead_id in lead_ids:
        for kind in migration.PER_LEAD_KINDS:
            if client.exists(keys.per_lead(kind, lead_id)):
                client.rename(keys.per_lead(kind, lead_id), f"{old}:{kind}:{lead_id}")
        # Timelines were streams then, one entry per stream entry under field "e".
        timeline = f"{old}:tl:{lead_id}"
        entries = client.lrange(timeline, 0, -1)
        client.delete(timeline)
        for item in entries:
            client.xadd(timeline, {"e": item})
    for name, builder in [
        ("sched", keys.schedule),
        ("claimed", keys.claimed),
        ("unknown", keys.unknown),
        ("parked", keys.parked),
    ]:
        for bucket in range(keys.shards):
            entries = client.zrange(builder(bucket), 0, -1, withscores=True)
            if entries:
                client.zadd(f"{old}:{name}", dict(entries))
                client.delete(builder(bucket))
    stats = store.counters.sequence_hashes()
    for sequence, values in stats.items():
        client.hset(f"{old}:stats:{sequence}", mapping=cast(Any, values))
        client.sadd(f"{old}:stats", sequence)
    for bucket in range(keys.shards):
        for name, value in client.hgetall(keys.bucket_counters(bucket)).items():
            client.hincrbyfloat(keys.counters, name, float(value))
        client.delete(keys.bucket_counters(bucket), keys.stats_index(bucket))
        client.delete(*(keys.stats(sequence, bucket) for sequence in stats))
    for lead_id in lead_ids:
        address = f"{lead_id}@example.com"
        client.hdel(keys.email_index(address), keys.email_index_field(address, lead_id))
        client.sadd(f"{old}:email:{address}", lead_id)
    buckets = [f"{old}:{{e{bucket}}}:supp" for bucket in range(EMAIL_BUCKETS)]
    pipe = client.pipeline(transaction=False)
    for key in buckets:
        pipe.hgetall(key)
    for key, entries in zip(buckets, pipe.execute(), strict=True):
        for digest, reason in entries.items():
            client.set(f"{old}:supph:{digest.decode()}", reason)
            client.sadd(f"{old}:suppressed", digest)
            client.delete(key)
    client.set(f"{old}:supp:plain@example.com", "bounce")  # from before hashing
    client.sadd(f"{old}:suppressed", "plain@example.com")
    client.delete(keys.suppressed_count, keys.layout)


def snapshot(store: Store, lead_ids: list[str]) -> dict[str, Any]:
    """What must survive the move: each lead's data, enrollments, ledger and pending
    touches, the schedule, stats, counters, the email index and the suppressions."""
    return {
        "leads": {lead: store.get_lead(lead) for lead in lead_ids},
        "enrollments": {lead: store.enrollments(lead) for lead in lead_ids},
        "ledger": {lead: store.ledger.entries(lead) for lead in lead_ids},
        "received": {lead: store.ledger.received(lead) for lead in lead_ids},
        "schedule": store.schedule.entries(),
        "claimed": store.schedule.stats().claimed,
        "stats": store.stats(),
        "sent": store.global_counters().get("sent"),
        "by_email": {lead: store.leads_by_email(f"{lead}@example.com") for lead in lead_ids},
        "suppressed": [store.email_suppressed(f"{lead}@example.com") for lead in lead_ids],
        "timelines": {
            lead: store.redis.lrange(store.keys.timeline(lead), 0, -1) for lead in lead_ids
        },
    }


def test_migrate_state_moves_layout1_without_losing_a_touch(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness()
    store = h.rt.store
    for i, lead in enumerate(LEADS):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.settle()
    h.run_until(h.clock.now().timestamp() + 2 * 86400)  # a few sends: ledgers and stats
    suppress_address(h.rt, f"{LEADS[-1]}@example.com", "bounce")
    h.settle()
    sent_before = len(h.sent())
    before = snapshot(store, LEADS)
    assert len(before["schedule"]) == len(LEADS) - 1  # one next touch per live lead
    to_layout1(store, LEADS)
    assert store.schedule.entries() == [] and store.redis.zcard("nurture:sched") == len(LEADS) - 1
    with pytest.raises(SettingsError, match="nurture migrate state"):
        h.rt.check_redis()

    counted = migration.migrate_layout1(store.redis, store.keys, dry_run=True)
    assert counted["sched"] == len(LEADS) - 1 and counted["lead"] == len(LEADS)
    assert counted["suppressions"] == 2 and counted["email"] == len(LEADS)
    assert store.redis.zcard("nurture:sched") == len(LEADS) - 1  # the dry run wrote nothing

    # A crash mid-way: the touches have moved, the stats not yet; workers stay fenced out.
    def crash(*_: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(migration, "_stats", crash)
    with pytest.raises(RuntimeError):
        migration.migrate_layout1(store.redis, store.keys)
    monkeypatch.undo()
    assert len(store.schedule.entries()) == len(LEADS) - 1
    with pytest.raises(SettingsError, match="has not finished"):
        h.rt.check_redis()
    # Run again (both steps, as `nurture migrate state` does): it carries on, and folds
    # each lead's four keys into its hash; a third run finds nothing left.
    assert migrate_state(h.rt)["folded"] == len(LEADS)
    assert migrate_state(h.rt) == {}
    h.rt.check_redis()
    after = snapshot(store, LEADS)
    assert after == before
    assert store.email_suppressed("plain@example.com") == "bounce"
    assert store.suppressed_count() == 2
    # Every remaining touch still goes out, exactly once.
    h.run_until(h.clock.now().timestamp() + 40 * 86400)
    for lead in LEADS[:-1]:
        steps = [s for (who, seq, s) in h.sent() if who == lead and seq == "value-first"]
        assert steps == VALUE_FIRST, lead
    assert len(h.sent()) > sent_before


def run_layout2_migration(h: Harness, leads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Layout 2 -> 3 on the harness's Redis (single or cluster): workers fenced out, a
    dry run that writes nothing, a crash after the first batch, a run that carries on;
    the same state after; then every remaining touch goes out exactly once."""
    store = h.rt.store
    sent_before = len(h.sent())
    before = snapshot(store, leads)
    assert len(before["schedule"]) == len(leads)
    to_layout2(store, leads)
    with pytest.raises(SettingsError, match="nurture migrate state"):
        h.rt.check_redis()
    assert migrate_state(h.rt, dry_run=True) == {"folded": len(leads)}
    assert not any(store.redis.exists(store.keys.lead(lead)) for lead in leads)

    # A crash after the first batch: those leads are folded whole, the rest untouched.
    monkeypatch.setattr(migration, "BATCH", 4)
    real_fold = migration._fold_batch
    batches: list[int] = []

    def crash_after_one(*args: Any) -> int:
        if batches:
            raise RuntimeError("killed")
        batches.append(real_fold(*args))
        return batches[-1]

    monkeypatch.setattr(migration, "_fold_batch", crash_after_one)
    with pytest.raises(RuntimeError):
        migrate_state(h.rt)
    monkeypatch.setattr(migration, "_fold_batch", real_fold)
    folded = [lead for lead in leads if store.redis.exists(store.keys.lead(lead))]
    assert batches == [4] and len(folded) == 4
    assert not any(
        store.redis.exists(store.keys.per_lead(kind, lead))
        for lead in folded
        for kind in migration.FOLDED_KINDS
    )
    with pytest.raises(SettingsError, match="has not finished"):
        h.rt.check_redis()
    assert migrate_state(h.rt) == {"folded": len(leads) - 4}
    assert migrate_state(h.rt) == {}
    h.rt.check_redis()
    assert store.layout() == store.wanted_layout()
    assert snapshot(store, leads) == before
    h.run_until(h.clock.now().timestamp() + 40 * 86400)
    for lead in leads:
        steps = [s for (who, seq, s) in h.sent() if who == lead and seq == "value-first"]
        assert steps == VALUE_FIRST, lead
    assert len(h.sent()) > sent_before


def test_migrate_state_folds_layout2_leads_without_losing_a_touch(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness()
    for i, lead in enumerate(LEADS[:12]):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.settle()
    h.run_until(h.clock.now().timestamp() + 2 * 86400)  # sends: ledgers, received content
    h.rt.check_redis()
    assert any(h.rt.store.ledger.received(lead) for lead in LEADS[:12])
    run_layout2_migration(h, LEADS[:12], monkeypatch)


def test_migrate_state_folds_layout2_leads_on_the_cluster(
    make_harness: Callable[..., Harness],
    redis_cluster: ClusterProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = make_harness(redis_url=redis_cluster.url, redis_cluster=True)
    for i, lead in enumerate(LEADS[:12]):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.settle()
    h.run_until(h.clock.now().timestamp() + 2 * 86400)
    h.rt.check_redis()
    run_layout2_migration(h, LEADS[:12], monkeypatch)


def test_nurture_migrate_state_dry_run_from_the_command_line(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.zadd("nurture:sched", {"value-first\x1f1\x1fcase-study\x1flead-1": 1.0})
    client.hset("nurture:lead:lead-1", "data", "{}")
    env = {"NURTURE_REDIS_URL": redis_url, "NURTURE_STATE_DIR": str(tmp_path), "PATH": ""}
    result = subprocess.run(
        [*nurture_command(), "migrate", "state", "--dry-run"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "state: would move 1 lead, 1 sched"
    result = subprocess.run(
        [*nurture_command(), "migrate", "state"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.stdout.strip() == "state: moved 1 folded, 1 lead, 1 sched", result.stderr
    assert Store(client).schedule.entries() == [("value-first\x1f1\x1fcase-study\x1flead-1", 1.0)]
    client.close()


def test_a_migrated_single_redis_imports_into_the_cluster_with_redis_cli(
    make_harness: Callable[..., Harness], redis_url: str, redis_cluster: ClusterProcess
) -> None:
    """Step 5 of docs/deployment.md: ``redis-cli --cluster import --cluster-copy`` moves
    every key of the bucketed layout into the node owning its slot; workers on the
    cluster then see the same schedule and stats and carry on."""
    h = make_harness()
    for i, lead in enumerate(LEADS[:10]):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.settle()
    h.run_until(h.clock.now().timestamp() + 86400)
    h.rt.check_redis()
    before = snapshot(h.rt.store, LEADS[:10])
    source = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    imported = subprocess.run(
        [
            redis_cli(), "--cluster", "import", f"127.0.0.1:{redis_cluster.ports[0]}",
            "--cluster-from", f"{source['host']}:{source['port']}", "--cluster-copy",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout[-800:]
    on_cluster = make_harness(redis_url=redis_cluster.url, redis_cluster=True, clock=h.clock)
    on_cluster.rt.check_redis()  # the layout record came along
    assert snapshot(on_cluster.rt.store, LEADS[:10]) == before
    on_cluster.run_until(h.clock.now().timestamp() + 40 * 86400)
    for lead in LEADS[:10]:
        steps = [s for (who, seq, s) in h.sent() if who == lead and seq == "value-first"]
        assert steps == VALUE_FIRST, lead
