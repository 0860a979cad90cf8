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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from tests.chaos.procs import nurture_command
from tests.cluster import ClusterProcess, redis_cli
from tests.conftest import nurture
from tests.harness import Harness, event
from tests.test_pipeline import INBOUND, VALUE_FIRST
from worker.errors import SettingsError
from worker.migrate import migrate_state
from worker.runtime import Runtime
from worker.store import Store
from worker.store import layout_migration as migration
from worker.store.keys import EMAIL_BUCKETS, LEGACY_LAYOUT_FENCE
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
    # Layout 2's record (the hash every version reads), no layout-3 record, no fence.
    client.delete(keys.layout)
    client.delete(keys.legacy_layout)
    client.hset(
        keys.legacy_layout,
        mapping={"version": "2", "shards": keys.shards, "email_buckets": EMAIL_BUCKETS},
    )


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
    client.delete(keys.suppressed_count, keys.layout, keys.legacy_layout)


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

    counted = migrate_state(h.rt, dry_run=True)
    assert counted["sched"] == len(LEADS) - 1 and counted["lead"] == len(LEADS)
    assert counted["suppressions"] == 2 and counted["email"] == len(LEADS)
    assert counted["folded"] == len(LEADS)  # layout 1's leads, folded after the first step
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


def layout2_state(h: Harness, leads: list[str]) -> Store:
    """``leads`` through the real pipeline (one event each), then split into layout 2."""
    for i, lead in enumerate(leads):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.settle()
    h.rt.check_redis()
    to_layout2(h.rt.store, leads)
    return h.rt.store


def other_shards(h: Harness, shards: int) -> Runtime:
    """A runtime on the harness's Redis (or cluster) set to another
    ``NURTURE_STATE_SHARDS``."""
    return Runtime(
        h.rt.settings.model_copy(update={"state_shards": shards}),
        load_catalog=False,
        broker=StubBroker(),  # type: ignore[no-untyped-call]
    )


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
    # Set to another number of shards, it refuses before writing anything.
    wrong = other_shards(h, 64)
    try:
        with pytest.raises(SettingsError, match=r"NURTURE_STATE_SHARDS=64, .* 256 shards"):
            migrate_state(wrong)
    finally:
        wrong.close()
    assert b"migrating" not in store.redis.hgetall(store.keys.legacy_layout)
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
    # The record versions before layout 3 read is now one they refuse (a string).
    assert store.redis.get(store.keys.legacy_layout) == LEGACY_LAYOUT_FENCE.encode()
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
    assert result.stdout.strip() == "state: would move 1 folded, 1 lead, 1 sched"
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


def test_migrate_state_with_another_number_of_shards_refuses_before_writing(
    make_harness: Callable[..., Harness],
) -> None:
    """Set to the wrong shards, the migration used to record them first (the layout-1
    step), fold nothing (every lead key had a tag it did not compute), and record
    layout 3: workers then started on what looked like empty state."""
    h = make_harness()
    for i, lead in enumerate(LEADS[:6]):
        h.emit(event(f"e{i}", lead_id=lead, email=f"{lead}@example.com", **INBOUND))
    h.settle()
    h.rt.check_redis()
    store, client = h.rt.store, h.rt.store.redis
    before = snapshot(store, LEADS[:6])
    to_layout2(store, LEADS[:6])
    keys_before = sorted(client.keys("*"))
    record = client.hgetall(store.keys.legacy_layout)
    wrong = other_shards(h, 64)
    try:
        for dry_run in (True, False):
            with pytest.raises(SettingsError, match=r"NURTURE_STATE_SHARDS=64, .* 256 shards"):
                migrate_state(wrong, dry_run=dry_run)
        assert sorted(client.keys("*")) == keys_before
        assert client.hgetall(store.keys.legacy_layout) == record  # nothing written
        # With no shards recorded, the lead keys' own tags give the mismatch away.
        client.hdel(store.keys.legacy_layout, "shards")
        for dry_run in (True, False):
            with pytest.raises(
                SettingsError, match=r"bucket \{b\d+\}, but NURTURE_STATE_SHARDS=64"
            ):
                migrate_state(wrong, dry_run=dry_run)
        assert sorted(client.keys("*")) == keys_before
        assert b"migrating" not in client.hgetall(store.keys.legacy_layout)
        with pytest.raises(SettingsError, match="NURTURE_STATE_SHARDS=64"):
            migration.layout2_leads(client, wrong.store.keys)
    finally:
        wrong.close()
    assert migrate_state(h.rt)["folded"] == 6  # the right setting folds every lead
    h.rt.check_redis()
    assert snapshot(store, LEADS[:6]) == before


def fold_while_layout2_keys_appear(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process of the version before (left running) writes a lead's layout-2 key while
    the fold runs: the last scan finds it, the record stays ``migrating`` (workers stay
    out) and the error names the key; a run again folds it and finishes."""
    store = layout2_state(h, LEADS[:5])
    late = store.keys.per_lead("lead", "late-lead")
    real_fold = migration._fold_batch

    def fold_while_an_old_worker_writes(*args: Any) -> int:
        store.redis.hset(late, "data", '{"email": "late@example.com"}')
        return real_fold(*args)

    monkeypatch.setattr(migration, "_fold_batch", fold_while_an_old_worker_writes)
    with pytest.raises(SettingsError, match=rf"1 lead\(s\) got layout-2 keys .*{late}"):
        migrate_state(h.rt)
    monkeypatch.setattr(migration, "_fold_batch", real_fold)
    with pytest.raises(SettingsError, match="has not finished"):
        h.rt.check_redis()
    assert store.layout() is None  # layout 3 not recorded
    assert migrate_state(h.rt) == {"folded": 1}
    h.rt.check_redis()
    assert store.get_lead("late-lead") is not None


def test_a_fold_refuses_to_finish_while_layout2_keys_appear(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    fold_while_layout2_keys_appear(make_harness(), monkeypatch)


def test_a_fold_refuses_to_finish_while_layout2_keys_appear_on_the_cluster(
    make_harness: Callable[..., Harness],
    redis_cluster: ClusterProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = make_harness(redis_url=redis_cluster.url, redis_cluster=True)
    fold_while_layout2_keys_appear(h, monkeypatch)


#: main before layout 3 (this repository's history): the version an install rolls back to.
BEFORE_LAYOUT3 = "5dbf3aa"


def old_version(tmp_path: Path) -> Path:
    """The ``worker`` package of :data:`BEFORE_LAYOUT3`, from git, to run as it was."""
    root = Path(__file__).resolve().parents[2]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", BEFORE_LAYOUT3, "worker"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    target = tmp_path / "old"
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


OLD_CHECK = """
import redis
from worker.store import Store
from worker.store.keys import Keys
from worker.store.layout_migration import migrate_layout1
client = redis.Redis.from_url({url!r})
for name, step in [("check_layout", lambda: Store(client).check_layout()),
                   ("migrate_layout1", lambda: migrate_layout1(client, Keys()))]:
    try:
        step()
        print(name, "ran")
    except Exception as exc:
        print(name, "refused:", type(exc).__name__, exc)
"""


def run_old(old: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**env, "PYTHONPATH": str(old)}, cwd=old, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_version_before_layout3_refuses_a_folded_state(
    make_harness: Callable[..., Harness],
    redis_url: str,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The real code of :data:`BEFORE_LAYOUT3` (git archive): its ``check_layout`` (the
    start of its commands: status, lead, report, pause, migrate queues) and its
    ``nurture migrate state`` (which would have cleared a ``migrating`` fence and let its
    workers in) stop on the folded state's older record, and on a fresh install's;
    during the fold its check says the migration has not finished."""
    old = old_version(tmp_path)
    h = make_harness()
    store = layout2_state(h, LEADS[:4])
    store.redis.hset(store.keys.legacy_layout, "migrating", "1")  # as during the fold
    during = run_old(old, cli_env, "-c", OLD_CHECK.format(url=redis_url))
    assert "check_layout refused: SettingsError `nurture migrate state` has not" in during.stdout
    store.redis.hdel(store.keys.legacy_layout, "migrating")
    assert migrate_state(h.rt)["folded"] == 4
    checked = run_old(old, cli_env, "-c", OLD_CHECK.format(url=redis_url))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == [
        f"{name} refused: ResponseError WRONGTYPE Operation against a key holding the "
        "wrong kind of value"
        for name in ("check_layout", "migrate_layout1")
    ]
    for command in (["status"], ["migrate", "state"]):
        result = run_old(old, cli_env, "-m", "worker.cli", *command)
        assert result.returncode == 1 and "WRONGTYPE" in result.stderr, result.stderr
    assert store.redis.get(store.keys.legacy_layout) == LEGACY_LAYOUT_FENCE.encode()
    h.rt.check_redis()  # this version runs on
    assert store.layout() == store.wanted_layout()
    # A fresh install of this version is refused the same way.
    store.redis.flushall()
    h.rt.check_redis()
    fresh = run_old(old, cli_env, "-c", OLD_CHECK.format(url=redis_url))
    assert fresh.stdout.count("refused: ResponseError WRONGTYPE") == 2, fresh.stdout


def test_serve_refuses_a_layout_it_does_not_know_and_serves_an_older_one(
    make_harness: Callable[..., Harness], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``nurture serve`` checks the layout at start: a newer layout or another number of
    shards stops it; layout 2 (being migrated or not) is served, as intake goes on while
    ``nurture migrate state`` runs; workers refuse it."""
    h = make_harness()
    h.rt.check_redis()
    store = h.rt.store
    store.redis.hset(store.keys.layout, "version", "4")
    result = nurture(["serve", "--port", "0"], cli_env, tmp_path)
    assert result.returncode == 1
    assert "key layout 4, written by a newer version" in result.stderr, result.stderr
    store.redis.hset(store.keys.layout, "version", "3")
    result = nurture(["serve", "--port", "0"], {**cli_env, "NURTURE_STATE_SHARDS": "64"}, tmp_path)
    assert result.returncode == 1
    assert "set NURTURE_STATE_SHARDS=256" in result.stderr, result.stderr
    to_layout2(store, [])
    for migrating in (False, True):
        if migrating:
            store.redis.hset(store.keys.legacy_layout, "migrating", "1")
        h.rt.check_redis(older_layout=True)
        with pytest.raises(SettingsError, match="nurture migrate state"):
            h.rt.check_redis()
    worker = nurture(["worker", "--processes", "1"], cli_env, tmp_path)
    assert worker.returncode == 1 and "has not finished" in worker.stderr, worker.stderr


def test_a_layout3_record_in_the_older_key_is_moved_and_fenced(
    make_harness: Callable[..., Harness],
) -> None:
    """The first builds of layout 3 kept its record in ``nurture:layout`` (a hash, as
    layout 2's): a worker of this version moves it to ``nurture:layout:record`` and
    turns the older key into the string the versions before refuse."""
    h = make_harness()
    store = h.rt.store
    store.redis.hset(store.keys.legacy_layout, mapping=store.wanted_layout())
    h.rt.check_redis()
    assert store.layout() == store.wanted_layout()
    assert store.redis.get(store.keys.legacy_layout) == LEGACY_LAYOUT_FENCE.encode()
    h.rt.check_redis()  # and runs on it from then on
