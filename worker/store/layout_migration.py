"""Moving an install's state to the current key layout (3), with every worker stopped.

* layout 1 -> 2 (:func:`migrate_layout1`, single Redis only): the untagged layout to the
  bucketed one;
* layout 2 -> 3 (:func:`fold_leads`, single Redis or Redis Cluster): each lead's four
  keys (``lead``, ``enr``, ``sent``, ``recv``) folded into its one hash
  (:meth:`~worker.store.keys.Keys.lead`), one atomic script per lead
  (``lua/fold_lead.lua``), pipelined in batches; fenced, resumable and countable like
  the first.

Layout 1 kept each lead's keys as ``<prefix>:<kind>:<lead id>``, the schedule, claims,
unknown outcomes, parked touches and stats in one global key each, the email index as a
set per address and the suppressions as a string per address (or keyed hash). Layout 2
(docs/scale-notes.md, section 2) tags them by lead bucket and email bucket.

The move runs with every worker stopped (``nurture migrate state``), on the single
Redis layout 1 lived on, and is:

* **safe**: each step is one ``RENAME`` or one ``MULTI`` transaction that writes the new
  entries and removes the old ones together, so a crash leaves every touch in exactly
  one place, never in none;
* **resumable and idempotent**: a step only ever finds what is still in layout 1, so
  running it again carries on where it stopped and then finds nothing to do;
* **fenced**: the layout record says ``migrating`` until the end, so a worker started
  meanwhile refuses to run (:meth:`Store.check_layout`);
* **countable**: ``dry_run`` counts what would move and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import cast

import redis
from redis.commands.core import Script

from worker.errors import SettingsError
from worker.store.keys import EMAIL_BUCKETS, LAYOUT_VERSION, Keys
from worker.store.scripts import Call, run_pipelined
from worker.store.suppressions import SuppressionStore
from worker.store.timeline import convert_stream

#: Per-lead kinds of layout 1 (``<prefix>:<kind>:<lead id>``) moved by RENAME.
PER_LEAD_KINDS = ("lead", "enr", "sent", "recv", "eng", "var", "tl")
#: Layout 2's per-lead kinds that layout 3 folds into the one lead hash, in the order of
#: ``lua/fold_lead.lua``'s KEYS after the new hash.
FOLDED_KINDS = ("lead", "enr", "sent", "recv")
#: Global zsets of touches split into the bucket shards, with their new builders' names.
TOUCH_ZSETS = ("sched", "claimed", "unknown", "parked")
#: The layout record's field that fences workers out while a migration runs.
MIGRATING = "migrating"
BATCH = 500


def _scan(client: redis.Redis, pattern: str) -> Iterator[str]:
    for raw in client.scan_iter(match=pattern, count=1000):
        yield cast(bytes, raw).decode()


def migrate_layout1(client: redis.Redis, keys: Keys, *, dry_run: bool = False) -> Counter[str]:
    """Move every layout-1 key of ``keys.prefix`` to layout 2; returns what moved (or,
    with ``dry_run``, would move) by kind: per-lead kinds in keys, touch zsets in
    entries, ``stats`` in sequences, ``email`` in addresses, ``suppressions``."""
    moved: Counter[str] = Counter()
    if not dry_run:
        client.hset(keys.layout, mapping={MIGRATING: "1", "shards": str(keys.shards)})
    _per_lead_keys(client, keys, moved, dry_run)
    for name in TOUCH_ZSETS:
        _touch_zset(client, keys, name, moved, dry_run)
    _stats(client, keys, moved, dry_run)
    _email_index(client, keys, moved, dry_run)
    _suppressions(client, keys, moved, dry_run)
    if not dry_run:
        # Never lowers a later layout's version (this step finds nothing to do there).
        version = int(cast(bytes | None, client.hget(keys.layout, "version")) or 0)
        client.hset(
            keys.layout,
            mapping={
                "version": str(max(version, 2)),
                "shards": str(keys.shards),
                "email_buckets": str(EMAIL_BUCKETS),
            },
        )
        client.hdel(keys.layout, MIGRATING)
    return moved


def fold_leads(
    client: redis.Redis, keys: Keys, script: Script, *, dry_run: bool = False
) -> Counter[str]:
    """Fold every layout-2 lead's four keys into its one hash (layout 3); returns
    ``{"folded": leads}`` (with ``dry_run``: the leads that would be folded).

    Each lead is one atomic script call (``lua/fold_lead.lua``): a crash leaves each
    lead folded or untouched, and a run again folds what is left. The layout record
    says ``migrating`` until the end (workers refuse to start meanwhile).

    Raises:
        SettingsError: When the install's state was laid out with another number of
            shards than ``keys`` (naming ``NURTURE_STATE_SHARDS``): its keys would not
            be found under the tags computed here.
    """
    stored = int(cast(bytes | None, client.hget(keys.layout, "shards")) or keys.shards)
    if stored != keys.shards:
        raise SettingsError(
            f"NURTURE_STATE_SHARDS={keys.shards}, but this install's state was laid out "
            f"with {stored} shards: set NURTURE_STATE_SHARDS={stored} and run "
            "`nurture migrate state` again"
        )
    lead_ids = sorted(layout2_leads(client, keys))
    moved: Counter[str] = Counter()
    if dry_run:
        if lead_ids:
            moved["folded"] = len(lead_ids)
        return moved
    client.hset(keys.layout, MIGRATING, "1")
    for start in range(0, len(lead_ids), BATCH):
        moved["folded"] += _fold_batch(client, keys, script, lead_ids[start : start + BATCH])
    client.hset(
        keys.layout,
        mapping={
            "version": str(LAYOUT_VERSION),
            "shards": str(keys.shards),
            "email_buckets": str(EMAIL_BUCKETS),
        },
    )
    client.hdel(keys.layout, MIGRATING)
    return +moved


def layout2_leads(client: redis.Redis, keys: Keys) -> set[str]:
    """The ids of the leads with any of layout 2's four per-lead keys."""
    found: set[str] = set()
    for kind in FOLDED_KINDS:
        for key in _scan(client, f"{keys.prefix}:{{*}}:{kind}:*"):
            _tag, _, rest = key[len(keys.prefix) + 2 :].partition("}:")
            lead_id = rest[len(kind) + 1 :]
            if keys.per_lead(kind, lead_id) == key:  # not another prefix's look-alike
                found.add(lead_id)
    return found


def _fold_batch(client: redis.Redis, keys: Keys, script: Script, lead_ids: Sequence[str]) -> int:
    """Fold a batch of leads (one round trip per node); how many had old keys."""
    calls: list[Call] = [
        ([keys.lead(lead_id), *(keys.per_lead(kind, lead_id) for kind in FOLDED_KINDS)], [])
        for lead_id in lead_ids
    ]
    return sum(1 for found in run_pipelined(client, script, calls) if int(found))


def _per_lead_keys(client: redis.Redis, keys: Keys, moved: Counter[str], dry_run: bool) -> None:
    for kind in PER_LEAD_KINDS:
        start = f"{keys.prefix}:{kind}:"
        for old in list(_scan(client, start + "*")):
            moved[kind] += 1
            if not dry_run:
                # RENAMENX: a key already at its new name (never expected with the
                # workers stopped) is left for the operator rather than overwritten.
                new = keys.per_lead(kind, old[len(start) :])
                client.renamenx(old, new)
                if kind == "tl":
                    # Clusters take no stream timelines (timeline.add_to): lists now.
                    convert_stream(client, new)


def _lead_of(member: bytes) -> str:
    return member.decode().rsplit("\x1f", 1)[-1]


def _touch_zset(
    client: redis.Redis, keys: Keys, name: str, moved: Counter[str], dry_run: bool
) -> None:
    old = f"{keys.prefix}:{name}"
    target = getattr(keys, {"sched": "schedule"}.get(name, name))
    if dry_run:
        if count := int(client.zcard(old)):
            moved[name] += count
        return
    while page := cast(
        list[tuple[bytes, float]], client.zrange(old, 0, BATCH - 1, withscores=True)
    ):
        pipe = client.pipeline(transaction=True)  # the batch moves whole or not at all
        for member, score in page:
            pipe.zadd(target(keys.bucket(_lead_of(member))), {member: score})
        pipe.zrem(old, *(member for member, _ in page))
        pipe.execute()
        moved[name] += len(page)


def _stats(client: redis.Redis, keys: Keys, moved: Counter[str], dry_run: bool) -> None:
    index = f"{keys.prefix}:stats"
    for raw in cast(set[bytes], client.smembers(index)):
        sequence = raw.decode()
        moved["stats"] += 1
        if dry_run:
            continue
        old = f"{keys.prefix}:stats:{sequence}"
        values = cast(dict[bytes, bytes], client.hgetall(old))
        pipe = client.pipeline(transaction=True)  # counted once: added and removed together
        for field, value in values.items():
            pipe.hincrby(keys.stats(sequence, 0), field, int(value))
        pipe.sadd(keys.stats_index(0), sequence)
        pipe.delete(old)
        pipe.srem(index, sequence)
        pipe.execute()


def _email_index(client: redis.Redis, keys: Keys, moved: Counter[str], dry_run: bool) -> None:
    start = f"{keys.prefix}:email:"
    for old in list(_scan(client, start + "*")):
        address = old[len(start) :]
        moved["email"] += 1
        if dry_run:
            continue
        lead_ids = [m.decode() for m in cast(set[bytes], client.smembers(old))]
        pipe = client.pipeline(transaction=True)
        for lead_id in lead_ids:
            pipe.hset(keys.email_index(address), keys.email_index_field(address, lead_id), "1")
        pipe.delete(old)
        pipe.execute()


def _suppressions(client: redis.Redis, keys: Keys, moved: Counter[str], dry_run: bool) -> None:
    """Keyed-hash entries keep their hash; plain-address entries get theirs."""
    plain, hashed = f"{keys.prefix}:supp:", f"{keys.prefix}:supph:"
    suppressions = SuppressionStore(client, keys)
    for old in [*_scan(client, plain + "*"), *_scan(client, hashed + "*")]:
        moved["suppressions"] += 1
        if dry_run:
            continue
        reason = client.get(old)
        if old.startswith(hashed):
            digest = old[len(hashed) :]
        else:
            digest = suppressions.digest(old[len(plain) :])
        pipe = client.pipeline(transaction=True)
        if isinstance(reason, bytes):
            pipe.hsetnx(keys.suppressions(digest), digest, reason)
        pipe.delete(old)
        pipe.execute()
    if dry_run:
        return
    # The count, from the entries themselves (so a resumed run counts right too).
    pipe = client.pipeline(transaction=False)
    for bucket in range(EMAIL_BUCKETS):
        pipe.hlen(f"{keys.prefix}:{{e{bucket}}}:supp")
    client.set(keys.suppressed_count, sum(int(n) for n in pipe.execute()))
    client.delete(f"{keys.prefix}:suppressed")
