"""Every Redis key the worker uses, in one place, each with what it holds.

Only the store package (``worker/store/``) builds keys. All keys start with a prefix
(``nurture`` by default) so a Redis can be shared with other applications; dramatiq's
own keys live under its ``dramatiq`` namespace (see :func:`dramatiq_queue_keys`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

#: Buckets of leads (``NURTURE_STATE_SHARDS``) unless configured: fixed at install.
DEFAULT_SHARDS = 256
#: Buckets of the email index and the suppression list (fixed: recorded in the layout).
EMAIL_BUCKETS = 131_072
#: The version of the key layout (``<prefix>:layout``): 1 was the untagged layout, 2 the
#: bucketed one with four keys per lead (``lead``, ``enr``, ``sent``, ``recv``), 3 folds
#: those four into one hash per lead (:meth:`Keys.lead`).
LAYOUT_VERSION = 3
#: The value of :attr:`Keys.legacy_layout` from layout 3 on (see there).
LEGACY_LAYOUT_FENCE = (
    "layout 3 (one hash per lead; its record is <prefix>:layout:record): versions before "
    "it must not run on this state; roll back by restoring the Redis snapshot taken "
    "before `nurture migrate state` (docs/deployment.md)"
)

# Fields of the lead hash (:meth:`Keys.lead`) besides the lead's flags. The Lua scripts
# spell them out as these ('e:', 'l:', 'r').
#: The lead's data (JSON).
DATA_FIELD = "d"
#: ``e:<sequence id>``: the lead's packed enrollment in that sequence.
ENROLLMENT_FIELD = "e:"
#: ``l:<sequence>:<generation>:<step>``: the touch's send-ledger entry.
LEDGER_FIELD = "l:"
#: The content ids the lead has been sent, ``,``-joined (ids are ``[a-z0-9_-]``).
RECEIVED_FIELD = "r"


def crc_bucket(text: str, buckets: int) -> int:
    """The bucket of ``text``: CRC-32 of its UTF-8 bytes modulo ``buckets``."""
    return zlib.crc32(text.encode()) % buckets


@lru_cache(maxsize=8)
def bucket_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each lead bucket, chosen so that bucket ``n`` lands in the
    ``n``-th of ``shards`` equal slot ranges: the buckets sit evenly in every primary's
    slots, whatever the number of primaries that divides ``shards``.

    Tag ``b<i>`` for the first ``i`` whose cluster slot (CRC16, as Redis computes it)
    falls in the range: deterministic, found in milliseconds (N = 256: 478 candidates).
    """
    found: dict[int, str] = {}
    i = 0
    while len(found) < shards:
        tag = f"b{i}"
        found.setdefault(key_slot(tag.encode()) * shards // REDIS_CLUSTER_HASH_SLOTS, tag)
        i += 1
    return tuple(found[n] for n in range(shards))


@dataclass(frozen=True)
class Keys:
    """Key builders for one prefix."""

    prefix: str = "nurture"
    #: Lead buckets (``NURTURE_STATE_SHARDS``): each has its own schedule shard,
    #: claims, counters and stats, in the slot of its hash tag.
    shards: int = DEFAULT_SHARDS
    tags: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= REDIS_CLUSTER_HASH_SLOTS:
            raise ValueError(f"shards must be 1..{REDIS_CLUSTER_HASH_SLOTS}, not {self.shards}")
        object.__setattr__(self, "tags", bucket_tags(self.shards))

    # -- buckets (docs/scale-notes.md, sections 2 and 3) ---------------------------

    def bucket(self, lead_id: str) -> int:
        """The bucket of a lead: CRC-32 of its id modulo :attr:`shards`."""
        return crc_bucket(lead_id, self.shards)

    def tagged(self, bucket: int, name: str) -> str:
        """``<prefix>:{<tag of bucket>}:<name>``: a key in the slot of lead bucket ``bucket``."""
        return f"{self.prefix}:{{{self.tags[bucket]}}}:{name}"

    def per_lead(self, kind: str, lead_id: str) -> str:
        """The one builder of every key that belongs to one lead:
        ``<prefix>:{<bucket tag>}:<kind>:<id>``.

        Every per-lead builder below goes through here (tests/test_keys.py checks it), so
        all of a lead's keys, and the schedule shard, claims, counters and stats its
        touches are written with, share one hash tag: one cluster slot, so every script
        and transaction on them runs on a Redis Cluster as on a single Redis.
        New per-lead keys: build them with this.
        """
        return self.tagged(self.bucket(lead_id), f"{kind}:{lead_id}")

    @property
    def layout(self) -> str:
        """Hash: ``version``, ``shards``, ``email_buckets`` (and ``migrating`` while
        ``nurture migrate state`` runs): the key layout in use from layout 3 on, written
        once; a worker configured otherwise refuses to start."""
        return f"{self.prefix}:layout:record"

    @property
    def legacy_layout(self) -> str:
        """Layouts 1 and 2's record, the one versions before layout 3 read: a hash like
        :attr:`layout` on an install not yet folded; from layout 3 on a *string* naming
        the layout (:data:`LEGACY_LAYOUT_FENCE`). Those versions' commands read it with
        HGETALL (``Store.check_layout``) and ``nurture migrate state`` writes it with HSET,
        so on a string they stop with Redis's WRONGTYPE error before touching a lead (a
        ``migrating`` field would not do: their ``migrate state`` clears it). Their
        workers and HTTP services never read it: after a fold the way back is the
        snapshot from before it, not the older version (docs/deployment.md)."""
        return f"{self.prefix}:layout"

    def event(self, event_id: str) -> str:
        """String, set NX with a TTL: this event id was accepted (replay guard)."""
        return f"{self.prefix}:evt:{event_id}"

    def lead(self, lead_id: str) -> str:
        """Hash, one per lead: everything of the lead but its lock, engagement, variants
        and timeline, one listpack while small (docs/scale-notes.md, section 4):

        * ``d``: the lead's data (JSON);
        * the flags: ``suppressed``, ``disq``, ``declined``, ``fit_sig``, ``last_touch``,
          ``seen:<event type>`` (latest occurred_at), ``held:<ledger field>`` (first due
          time of a touch the frequency cap holds back), ``fts`` (field times),
          ``contactable`` (when the lead first became contactable), ``merged_into``
          (the lead a CRM merge folded it into), ``erased``;
        * ``e:<sequence id>``: the packed enrollment (``worker/store/enrollments.py``);
        * ``l:<sequence>:<generation>:<step>``: the idempotency ledger entry of a touch,
          ``sending:<ts>`` | ``sent:<ts>`` | ``retry:<ts>`` | ``dead:<ts>`` |
          ``unknown:<ts>`` | ``skipped:<ts>`` (an ended generation's entries are dropped
          when the lead enrolls in that sequence again);
        * ``r``: the content ids this lead has been sent, ``,``-joined (never the same
          piece twice).
        """
        return self.per_lead("L", lead_id)

    def lead_lock(self, lead_id: str) -> str:
        """Lock serialising the processing of one lead's events."""
        return self.per_lead("lock", lead_id)

    def engagement(self, lead_id: str) -> str:
        """Hash: engagement fact -> first unix time, per enrollment (``<seq>:<gen>|<fact>``)
        and for any enrollment (``any|<fact>``). Facts: ``opened:<seq>/<step>``,
        ``clicked:<seq>/<step>``, ``clicked_content:<content id>``, ``clicked_tag:<tag>``
        (see :mod:`worker.sequences.engagement`). Written by the SendGrid Event Webhook."""
        return self.per_lead("eng", lead_id)

    def variants(self, lead_id: str) -> str:
        """Hash: ledger field of a touch (``<seq>:<gen>:<step>``) -> the A/B variant id
        this lead got for that step (only steps with ``variants``)."""
        return self.per_lead("var", lead_id)

    def email_index(self, email: str) -> str:
        """Hash, one per email bucket: ``<address>\x1f<lead id>`` -> ``1``, for every
        lead using the address (lower-cased). Bucketed (``{e<m>}``, m = CRC-32 of the
        address modulo :data:`EMAIL_BUCKETS`): a few entries per key at scale."""
        address = email.lower()
        return f"{self.prefix}:{{e{crc_bucket(address, EMAIL_BUCKETS)}}}:E"

    @staticmethod
    def email_index_field(email: str, lead: str) -> str:
        """The field of one (address, lead) in :meth:`email_index`."""
        return f"{email.lower()}\x1f{lead}"

    def suppressions(self, digest: str) -> str:
        """Hash, one per email bucket: keyed hash of an address -> why it is suppressed
        (see :class:`~worker.store.suppressions.SuppressionStore`)."""
        return f"{self.prefix}:{{e{crc_bucket(digest, EMAIL_BUCKETS)}}}:supp"

    def suppressed_email(self, email: str) -> str:
        """String: why this address is suppressed. Layout 1 only, before addresses were
        hashed: ``nurture migrate state`` moves these to :meth:`suppressions`
        (``suppressed_email("")`` is the prefix it scans)."""
        return f"{self.prefix}:supp:{email.lower()}"

    def suppressed_hash(self, digest: str) -> str:
        """String: why the address whose keyed hash is ``digest`` is suppressed. Layout 1
        only: ``nurture migrate state`` moves these to :meth:`suppressions`
        (``suppressed_hash("")`` is the prefix it scans)."""
        return f"{self.prefix}:supph:{digest}"

    @property
    def suppression_secret(self) -> str:
        """String: the secret of the suppression list's keyed hashes (HMAC-SHA256),
        generated once. Losing it would make every suppression unreadable."""
        return f"{self.prefix}:supph-secret"

    @property
    def suppressed_set(self) -> str:
        """Set: every suppression (keyed hashes, older entries addresses). Layout 1 only:
        the count is now the global counter ``suppressed``."""
        return f"{self.prefix}:suppressed"

    @property
    def suppressed_count(self) -> str:
        """String: how many addresses are suppressed (kept with each change)."""
        return f"{self.prefix}:suppressed:count"

    def schedule(self, bucket: int) -> str:
        """Zset, one shard per lead bucket: touch id -> due unix time. The durable
        schedule (a touch lives in the shard of its lead's bucket)."""
        return self.tagged(bucket, "sched")

    def claimed(self, bucket: int) -> str:
        """Zset per bucket: touch id -> lease expiry. Claimed by a scheduler, not yet done."""
        return self.tagged(bucket, "claimed")

    def unknown(self, bucket: int) -> str:
        """Zset per bucket: touch id -> time: sends whose outcome is unknown (crash
        mid-request)."""
        return self.tagged(bucket, "unknown")

    @property
    def dead(self) -> str:
        """Stream: dead letters (bad events, failed touches) with the reason."""
        return f"{self.prefix}:dead"

    def stats(self, sequence: str, bucket: int) -> str:
        """Hash per bucket (readers sum the buckets): ``<step>:<counter>`` -> count
        (sent, failed, delivered, open, click, converted...);
        ``<step>@<variant>:<counter>`` per A/B variant (sent, click, converted);
        ``_goal:converted`` and ``_goal:<event type>``: the sequence's conversions (a
        goal reached while enrolled)."""
        return self.tagged(bucket, f"stats:{sequence}")

    def stats_index(self, bucket: int) -> str:
        """Set per bucket: sequence ids that have stats in this bucket."""
        return self.tagged(bucket, "stats")

    def stats_fields(self, sequence: str) -> str:
        """Set: the ``<step>:<counter>`` fields a sequence's stats hashes may hold (its
        field index, what status and ``/metrics`` fetch with HMGET), with
        ``counters.INDEX_COMPLETE`` once built; untagged (written rarely)."""
        return f"{self.prefix}:statsf:{sequence}"

    @property
    def counters(self) -> str:
        """Hash: global counters written rarely (scheduler lag, catch-ups, suppressions)."""
        return f"{self.prefix}:counters"

    def bucket_counters(self, bucket: int) -> str:
        """Hash per bucket: the counters every send writes (``sent``, ``lateness_sum``);
        readers add them to :attr:`counters`."""
        return self.tagged(bucket, "counters")

    @property
    def secret(self) -> str:
        """String: the generated unsubscribe-token secret when none is configured."""
        return f"{self.prefix}:secret"

    def webhook_event(self, provider_event_id: str) -> str:
        """String with TTL: a SendGrid event id already processed."""
        return f"{self.prefix}:sgevt:{provider_event_id}"

    def timeline(self, lead_id: str) -> str:
        """List, capped and expiring (see ``worker/store/timeline.py``; a stream when an
        older version wrote it): what happened to this lead, one packed entry per event,
        field change, enrollment, exit, touch, skip, decline and provider report, for
        ``nurture lead``."""
        return self.per_lead("tl", lead_id)

    @property
    def delivery_paused(self) -> str:
        """Hash: ``reason``, ``since`` (unix time): delivery is paused for every worker
        because of an account fault (revoked key, unverified sender); absent when not."""
        return f"{self.prefix}:paused:delivery"

    @property
    def paused_sequences(self) -> str:
        """Hash: sequence id (or ``*`` for all) -> unix time it was paused by
        ``nurture pause``; nothing of a paused sequence is sent."""
        return f"{self.prefix}:paused:sequences"

    def parked(self, bucket: int) -> str:
        """Zset per bucket: touch id -> its due time: touches of a paused sequence, taken
        off the schedule until the sequence is resumed (then put back at that due time)."""
        return self.tagged(bucket, "parked")

    def pause_turn(self, name: str) -> str:
        """String with a TTL: one process holds the turn ``name`` (``probe``, ``log``)
        while delivery is paused, so N workers probe and log once, not N times."""
        return f"{self.prefix}:paused:turn:{name}"

    @property
    def heartbeat(self) -> str:
        """Hash: scheduler id -> last tick time (for status and lag)."""
        return f"{self.prefix}:schedulers"


def dramatiq_queue_keys(namespace: str, queue: str) -> tuple[str, str, str]:
    """dramatiq's Redis layout for one queue: the list of ready message ids, the delay
    queue (also a list; most delayed messages sit in worker memory), the dead-letter zset."""
    return f"{namespace}:{queue}", f"{namespace}:{queue}.DQ", f"{namespace}:{queue}.XQ"
