"""The key builders: every key of one lead is built by ``Keys.per_lead``, so the Redis
Cluster layout tags all of a lead's keys (new ones included) in one place, and the
bucket tags spread evenly over the cluster's slots (docs/scale-notes.md, section 2).

Slots: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
(CRC16 of the hash tag modulo 16384).
"""

from __future__ import annotations

import inspect
from collections import Counter

from redis.crc import key_slot

from worker.store.keys import Keys, bucket_tags


class Tagged(Keys):
    """Keys whose per-lead builder marks what it built."""

    def per_lead(self, kind: str, lead_id: str) -> str:
        return f"TAGGED:{super().per_lead(kind, lead_id)}"


def per_lead_builders() -> list[str]:
    """Every key builder taking a ``lead_id`` (a key of one lead), however it is named."""
    return [
        name
        for name, member in inspect.getmembers(Keys, inspect.isfunction)
        if name not in {"per_lead", "bucket"} and "lead_id" in inspect.signature(member).parameters
    ]


def test_every_per_lead_key_is_built_by_per_lead() -> None:
    builders = per_lead_builders()
    assert {"lead", "lead_lock", "engagement", "variants", "timeline"} <= set(builders)
    tagged = Tagged("nurture")
    for name in builders:
        key = getattr(tagged, name)("lead-1")
        assert key.startswith("TAGGED:nurture:{") and key.endswith(":lead-1"), name


def test_a_leads_keys_and_its_buckets_shared_keys_share_one_slot() -> None:
    keys = Keys("nurture")
    bucket = keys.bucket("lead-1")
    lead_keys = [getattr(keys, name)("lead-1") for name in per_lead_builders()]
    shared = [
        keys.schedule(bucket),
        keys.claimed(bucket),
        keys.unknown(bucket),
        keys.parked(bucket),
        keys.stats("value-first", bucket),
        keys.stats_index(bucket),
        keys.bucket_counters(bucket),
    ]
    assert len({key_slot(key.encode()) for key in lead_keys + shared}) == 1
    # One hash per lead (layout 3): data, flags, enrollments, ledger, received content.
    assert keys.lead("lead-1") == f"nurture:{{{keys.tags[bucket]}}}:L:lead-1"


def test_bucket_tags_sit_evenly_in_the_slot_ranges_of_any_primaries_dividing_them() -> None:
    for shards in (1, 3, 256, 1024):
        tags = bucket_tags(shards)
        assert len(set(tags)) == shards
        slots = [key_slot(tag.encode()) for tag in tags]
        # Bucket n lands in the n-th of `shards` equal slot ranges.
        assert [slot * shards // 16384 for slot in slots] == list(range(shards))
    # So 3 primaries from `redis-cli --cluster create` (0-5460, 5461-10922, 10923-16383)
    # get 85 or 86 of the 256 buckets each.
    owners = Counter(min(2, key_slot(tag.encode()) // 5461) for tag in bucket_tags(256))
    assert sorted(owners.values()) == [85, 85, 86]


def test_leads_spread_over_the_buckets() -> None:
    keys = Keys("nurture")
    counts = Counter(keys.bucket(f"lead-{i}") for i in range(25_600))
    assert len(counts) == 256 and max(counts.values()) < 2 * 100


def test_email_index_and_suppressions_are_bucketed_by_address() -> None:
    keys = Keys("nurture")
    assert keys.email_index("Ann@Example.com") == keys.email_index("ann@example.com")
    assert keys.email_index("ann@example.com").startswith("nurture:{e")
    assert keys.suppressions("ab12").endswith("}:supp")
