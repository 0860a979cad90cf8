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

Layout 3's record is its own key (:attr:`~worker.store.keys.Keys.layout`); the record
layouts 1 and 2 kept (:attr:`~worker.store.keys.Keys.legacy_layout`, a hash) becomes a
string once the fold ends, which every version before layout 3 refuses
(:func:`read_layout`): rolling back after a fold means restoring the snapshot taken
before it, never starting the older version.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis
from redis.commands.core import Script

from worker.errors import SettingsError
from worker.store.keys import EMAIL_BUCKETS, LAYOUT_VERSION, LEGACY_LAYOUT_FENCE, Keys
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
    check_shards(client, keys)
    moved: Counter[str] = Counter()
    if not dry_run:
        _mark_migrating(client, keys)
    _per_lead_keys(client, keys, moved, dry_run)
    for name in TOUCH_ZSETS:
        _touch_zset(client, keys, name, moved, dry_run)
    _stats(client, keys, moved, dry_run)
    _email_index(client, keys, moved, dry_run)
    _suppressions(client, keys, moved, dry_run)
    if not dry_run:
        if client.exists(keys.layout):
            # Layout 3 already (this step found nothing to do there): its record stays.
            client.hdel(keys.layout, MIGRATING)
        else:
            client.hset(
                keys.legacy_layout,
                mapping={
                    "version": "2",
                    "shards": str(keys.shards),
                    "email_buckets": str(EMAIL_BUCKETS),
                },
            )
            client.hdel(keys.legacy_layout, MIGRATING)
    return moved


@dataclasses.dataclass(frozen=True)
class StoredLayout:
    """What an install's layout records say (:func:`read_layout`)."""

    #: The record's fields (``version``, ``shards``, ``email_buckets``, ``migrating``
    #: while a migration runs); empty when there is none.
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    #: True when read from layout 3's own record (:attr:`Keys.layout`), False when from
    #: the record of layouts 1 and 2 (:attr:`Keys.legacy_layout`) or none.
    current: bool = False
    #: True when the older record is the string versions before layout 3 refuse.
    fenced: bool = False


def read_layout(client: redis.Redis, keys: Keys) -> StoredLayout:
    """The install's layout record: layout 3's own, else the older one (a hash).

    Raises:
        SettingsError: When the older record says layout 3 but layout 3's record is
            missing (deleted by hand): naming both keys and how to write it back.
    """
    fields = _hash(client, keys.layout)
    kind = cast(bytes, client.type(keys.legacy_layout)).decode()
    if fields:
        return StoredLayout(fields, current=True, fenced=kind == "string")
    if kind == "string":
        raise SettingsError(
            f"{keys.legacy_layout} says this state is in key layout {LAYOUT_VERSION}, but its "
            f"record {keys.layout} is missing: write it back (redis-cli HSET {keys.layout} "
            f"version {LAYOUT_VERSION} shards <NURTURE_STATE_SHARDS the install ran with> "
            f"email_buckets {EMAIL_BUCKETS}), then start again"
        )
    return StoredLayout(_hash(client, keys.legacy_layout) if kind == "hash" else {})


def _hash(client: redis.Redis, key: str) -> dict[str, str]:
    raw = cast(dict[bytes, bytes], client.hgetall(key))
    return {k.decode(): v.decode() for k, v in raw.items()}


def write_layout(client: redis.Redis, keys: Keys, fields: dict[str, str]) -> None:
    """Record layout 3 (``fields``, written as they are) and turn the older record into
    the string versions before layout 3 refuse. The record keeps ``migrating`` until the
    older one is fenced, so a crash in between leaves every version refusing."""
    record: dict[Any, Any] = {**fields, MIGRATING: "1"}
    client.hset(keys.layout, mapping=record)
    client.set(keys.legacy_layout, LEGACY_LAYOUT_FENCE)
    client.hdel(keys.layout, MIGRATING)


def check_shards(client: redis.Redis, keys: Keys) -> None:
    """Refuse, before anything is written, to migrate with another number of shards
    than the install's state was laid out with (its keys would not be found under the
    tags computed here, and nothing would be folded): the recorded number, else the
    tags of the layout-2 lead keys there are (:func:`layout2_leads`).

    Raises:
        SettingsError: Naming ``NURTURE_STATE_SHARDS`` and the stored value.
    """
    stored = read_layout(client, keys).fields.get("shards")
    if stored is None:
        layout2_leads(client, keys)  # no record of them: the keys' own tags must fit
    elif int(stored) != keys.shards:
        raise SettingsError(
            f"NURTURE_STATE_SHARDS={keys.shards}, but this install's state was laid out "
            f"with {stored} shards: set NURTURE_STATE_SHARDS={stored} and run "
            "`nurture migrate state` again"
        )


def _mark_migrating(client: redis.Redis, keys: Keys) -> None:
    """Fence workers out: ``migrating`` in layout 3's record if there is one, else in
    the older record (with the shards, so a resumed run is checked against them)."""
    if client.exists(keys.layout):
        client.hset(keys.layout, MIGRATING, "1")
    else:
        client.hset(keys.legacy_layout, mapping={MIGRATING: "1", "shards": str(keys.shards)})


def fold_leads(
    client: redis.Redis, keys: Keys, script: Script, *, dry_run: bool = False
) -> Counter[str]:
    """Fold every layout-2 lead's four keys into its one hash (layout 3); returns
    ``{"folded": leads}`` (with ``dry_run``: the leads that would be folded).

    Each lead is one atomic script call (``lua/fold_lead.lua``): a crash leaves each
    lead folded or untouched, and a run again folds what is left. The layout record
    says ``migrating`` until the end (workers refuse to start meanwhile); at the end a
    last scan must find no layout-2 key left (one written meanwhile by a process still
    running), then layout 3 is recorded (:func:`write_layout`).

    Raises:
        SettingsError: When the install's state was laid out with another number of
            shards than ``keys`` (naming ``NURTURE_STATE_SHARDS``): its keys would not
            be found under the tags computed here; or when layout-2 keys are left at the
            end (naming them; the record stays ``migrating``).
    """
    check_shards(client, keys)
    lead_ids = sorted(layout2_leads(client, keys))
    moved: Counter[str] = Counter()
    if dry_run:
        if lead_ids:
            moved["folded"] = len(lead_ids)
        return moved
    _mark_migrating(client, keys)
    for start in range(0, len(lead_ids), BATCH):
        moved["folded"] += _fold_batch(client, keys, script, lead_ids[start : start + BATCH])
    if left := sorted(layout2_leads(client, keys)):
        raise SettingsError(
            f"{len(left)} lead(s) got layout-2 keys while `nurture migrate state` ran (e.g. "
            f"{', '.join(keys.per_lead('lead', lead_id) for lead_id in left[:3])}...): a "
            "worker or HTTP service of a version before layout 3 is still running on this "
            "Redis; stop it, then run `nurture migrate state` again (workers stay fenced out)"
        )
    write_layout(
        client,
        keys,
        {
            "version": str(LAYOUT_VERSION),
            "shards": str(keys.shards),
            "email_buckets": str(EMAIL_BUCKETS),
        },
    )
    return +moved


def layout2_leads(client: redis.Redis, keys: Keys) -> set[str]:
    """The ids of the leads with any of layout 2's four per-lead keys.

    Raises:
        SettingsError: On a layout-2 lead key whose bucket tag is not the one ``keys``
            computes for its lead (naming ``NURTURE_STATE_SHARDS``): the state was laid
            out with another number of shards, and skipping it would lose the lead.
    """
    found: set[str] = set()
    for kind in FOLDED_KINDS:
        shape = re.compile(rf"{re.escape(keys.prefix)}:\{{(b[0-9]+)\}}:{kind}:(.+)", re.DOTALL)
        for key in _scan(client, f"{keys.prefix}:{{b*}}:{kind}:*"):
            match = shape.fullmatch(key)
            if match is None:
                continue  # not a lead key of this prefix (another prefix's look-alike)
            lead_id = match.group(2)
            if keys.per_lead(kind, lead_id) != key:
                raise SettingsError(
                    f"{key}: a layout-2 key of lead {lead_id!r} in bucket {{{match.group(1)}}}"
                    f", but NURTURE_STATE_SHARDS={keys.shards} puts that lead in "
                    f"{{{keys.tags[keys.bucket(lead_id)]}}}: this state was laid out with "
                    "another number of shards; set NURTURE_STATE_SHARDS to the value the "
                    "install ran with and run `nurture migrate state` again"
                )
            found.add(lead_id)
    return found


def layout1_leads(client: redis.Redis, keys: Keys) -> set[str]:
    """The ids of the leads with any of the four per-lead keys layout 3 folds, still in
    layout 1 (``<prefix>:<kind>:<id>``): the leads a dry run on layout 1 counts as to be
    folded (their layout-2 keys exist only once :func:`migrate_layout1` has run)."""
    found: set[str] = set()
    for kind in FOLDED_KINDS:
        start = f"{keys.prefix}:{kind}:"
        found.update(key[len(start) :] for key in _scan(client, start + "*"))
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
    plain, hashed = keys.suppressed_email(""), keys.suppressed_hash("")
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
    client.delete(keys.suppressed_set)
