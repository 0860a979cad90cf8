"""The state store: the only code that talks to Redis.

Split by what it stores, each part with typed results:

- :mod:`~worker.store.keys`: every key, with what it holds;
- :mod:`~worker.store.events`: the replay guard (event ids accepted / applied);
- :mod:`~worker.store.leads`: lead data and flags, the per-lead lock, the email index;
- :mod:`~worker.store.enrollments`: enrollments, written with their schedule entries;
- :mod:`~worker.store.engagement`: what each lead opened and clicked;
- :mod:`~worker.store.conversions`: goal conversions and the touch they go to;
- :mod:`~worker.store.schedule`: the durable schedule and the schedulers' claims;
- :mod:`~worker.store.ledger`: the send ledger (reserve / release / advance scripts);
- :mod:`~worker.store.pauses`: delivery paused by an account fault, sequences paused;
- :mod:`~worker.store.counters`, :mod:`~worker.store.dead_letters`,
  :mod:`~worker.store.suppressions`, :mod:`~worker.store.queues`;
- :mod:`~worker.store.timeline`: each lead's capped, expiring timeline;
- :mod:`~worker.store.scripts`: the Lua scripts in ``lua/``, loaded in one place.

:class:`Store` composes them. Domain code uses the parts (``store.leads.get(...)``);
the flat methods below serve the HTTP service, the CLI, and tests that read state.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, cast

import redis

from worker.enrollment import Enrollment
from worker.errors import SettingsError
from worker.store.conversions import ConversionStore
from worker.store.counters import Counters
from worker.store.dead_letters import DEAD_LETTER_MAXLEN, DeadLetterStore
from worker.store.engagement import EngagementStore
from worker.store.enrollments import EnrollmentStore, TouchState
from worker.store.events import (
    EVENT_DEDUP_SECONDS,
    EVENT_PENDING_SECONDS,
    WEBHOOK_DEDUP_SECONDS,
    ReplayGuard,
)
from worker.store.keys import (
    DEFAULT_SHARDS,
    EMAIL_BUCKETS,
    LAYOUT_VERSION,
    LEGACY_LAYOUT_FENCE,
    Keys,
)
from worker.store.layout_migration import MIGRATING, StoredLayout, read_layout, write_layout
from worker.store.leads import LeadRecord, LeadStore
from worker.store.ledger import Advance, Ledger, LedgerState, Reservation, Reserve, Sent, Verdict
from worker.store.pauses import DeliveryPause, PauseStore
from worker.store.schedule import ScheduleStats, ScheduleStore
from worker.store.scripts import load_scripts
from worker.store.suppressions import SuppressionStore
from worker.store.timeline import Timeline

__all__ = [
    "DEAD_LETTER_MAXLEN",
    "EVENT_DEDUP_SECONDS",
    "EVENT_PENDING_SECONDS",
    "WEBHOOK_DEDUP_SECONDS",
    "Advance",
    "DeliveryPause",
    "Enrollment",
    "LeadRecord",
    "LedgerState",
    "Reservation",
    "Reserve",
    "ScheduleStats",
    "Sent",
    "Store",
    "TouchState",
    "Verdict",
]


class Store:
    """The worker's Redis data, as the composition of its parts.

    Attributes:
        redis: The client (for tests that inspect Redis; worker code goes through the parts).
        keys: The key builders (likewise).
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "nurture", shards: int = DEFAULT_SHARDS
    ) -> None:
        self.redis = client
        self.keys = Keys(prefix, shards)
        scripts = load_scripts(client)
        #: The Lua scripts by name (``lua/<name>.lua``), for the parts and the migration.
        self.scripts = scripts
        self.events = ReplayGuard(client, self.keys)
        self.leads = LeadStore(client, self.keys, scripts)
        self.enrolled = EnrollmentStore(client, self.keys)
        self.schedule = ScheduleStore(client, self.keys, scripts["claim_due"])
        self.suppressions = SuppressionStore(client, self.keys)
        self.ledger = Ledger(client, self.keys, scripts, self.suppressions.reasons)
        self.counters = Counters(client, self.keys, scripts)
        self.dead = DeadLetterStore(client, self.keys)
        self.pauses = PauseStore(client, self.keys)
        self.engagement = EngagementStore(client, self.keys)
        self.conversions = ConversionStore(client, self.keys)
        self.timeline = Timeline(client, self.keys)

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.redis.ping())
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            return False

    def check_layout(self, *, older: bool = False) -> None:
        """Record the key layout on first use; refuse one laid out otherwise.

        With ``older`` (the HTTP services, which keep taking events while
        ``nurture migrate state`` runs), an older layout or a migration under way is
        accepted; a newer layout or another number of shards never is.

        Raises:
            SettingsError: When the stored layout has another number of shards (naming
                ``NURTURE_STATE_SHARDS``), is newer than this version's, or (unless
                ``older``) the data is in an older layout (the untagged one, or four keys
                per lead: naming ``nurture migrate state``) or being migrated.
        """
        stored = read_layout(self.redis, self.keys)
        if not stored.fields:
            if self._layout1_state():
                if older:
                    return
                raise SettingsError(
                    "this Redis holds state in the older key layout (before lead buckets); "
                    "stop every worker and run `nurture migrate state` "
                    "(docs/deployment.md), then start again"
                )
            self._record_new_layout()
            stored = read_layout(self.redis, self.keys)
        fields = stored.fields
        if MIGRATING in fields and not older:
            raise SettingsError(
                "`nurture migrate state` has not finished on this Redis; run it again to "
                "complete it (it carries on where it stopped), then start the workers"
            )
        self._check_version(stored, older)
        shards = int(fields.get("shards", self.keys.shards))
        if shards != self.keys.shards:
            raise SettingsError(
                f"NURTURE_STATE_SHARDS={self.keys.shards}, but this install's state was laid "
                f"out with {shards} shards (fixed at install): set NURTURE_STATE_SHARDS={shards}"
            )

    def _layout1_state(self) -> bool:
        markers = self.redis.pipeline(transaction=False)
        for key in layout1_markers(self.keys.prefix):
            markers.exists(key)
        return any(markers.execute())

    def _record_new_layout(self) -> None:
        """A fresh install: layout 3's record, and the older record as the string that
        versions before layout 3 refuse (``NX``: whichever came first stays)."""
        self.redis.set(self.keys.legacy_layout, LEGACY_LAYOUT_FENCE, nx=True)
        pipe = self.redis.pipeline(transaction=False)
        for name, value in self.wanted_layout().items():
            pipe.hsetnx(self.keys.layout, name, value)
        pipe.execute()

    def _check_version(self, stored: StoredLayout, older: bool) -> None:
        version = int(stored.fields.get("version", LAYOUT_VERSION if stored.current else 2))
        if version > LAYOUT_VERSION:
            raise SettingsError(
                f"this Redis holds state in key layout {version}, written by a newer version "
                f"of nurture-worker (this one knows layouts up to {LAYOUT_VERSION}): run "
                "the newer version"
            )
        if not stored.current and version == LAYOUT_VERSION and MIGRATING not in stored.fields:
            # Layout 3 recorded in the older record (the first builds of layout 3): move
            # the record and fence the older one off.
            write_layout(self.redis, self.keys, stored.fields)
        elif stored.current and not stored.fenced and MIGRATING not in stored.fields:
            self.redis.set(self.keys.legacy_layout, LEGACY_LAYOUT_FENCE)
        if version < LAYOUT_VERSION and not older:
            raise SettingsError(
                f"this Redis holds state in key layout {version} (four keys per lead; this "
                f"version keeps one hash per lead, layout {LAYOUT_VERSION}): stop every "
                "worker and run `nurture migrate state` (docs/deployment.md), then start again"
            )

    def layout(self) -> dict[str, str] | None:
        """Layout 3's record (``version``, ``shards``, ``email_buckets``), or None."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.layout))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def wanted_layout(self) -> dict[str, str]:
        """The layout this store writes."""
        return {
            "version": str(LAYOUT_VERSION),
            "shards": str(self.keys.shards),
            "email_buckets": str(EMAIL_BUCKETS),
        }

    def unsubscribe_secret(self, configured: str | None) -> str:
        """The configured secret, else one generated once and shared through Redis."""
        if configured:
            return configured
        self.redis.set(self.keys.secret, secrets.token_urlsafe(32), nx=True)
        return cast(bytes, self.redis.get(self.keys.secret)).decode()

    # -- flat access for the HTTP service, the CLI and tests --------------------

    def get_lead(self, lead_id: str) -> LeadRecord | None:
        return self.leads.get(lead_id)

    def save_lead(
        self,
        lead_id: str,
        data: Mapping[str, Any],
        old_email: str | None,
        flags: Mapping[str, str] | None = None,
    ) -> None:
        self.leads.save(lead_id, data, old_email, flags)

    def set_lead_flags(self, lead_id: str, **flags: str | float | None) -> None:
        self.leads.set_flags(lead_id, flags)

    def leads_by_email(self, email: str) -> list[str]:
        return self.leads.by_email(email)

    def enrollments(self, lead_id: str) -> dict[str, Enrollment]:
        return self.enrolled.all(lead_id)

    def enrollment(self, lead_id: str, sequence: str) -> Enrollment | None:
        return self.enrolled.get(lead_id, sequence)

    def scheduled_for(self, lead_id: str) -> list[tuple[str, float]]:
        """Pending touches of one lead (a scan: for status, preview and tests, not hot paths)."""
        members = [
            member
            for sequence, enrollment in self.enrolled.all(lead_id).items()
            if (member := enrollment.pending_touch(sequence, lead_id)) is not None
        ]
        return self.schedule.pending(members)

    def schedule_stats(self) -> dict[str, float | int | None]:
        return self.schedule.stats().as_dict()

    def claim_due(self, now: float, limit: int, lease: float) -> list[tuple[str, float]]:
        """Claim up to ``limit`` due touches from each shard of the schedule."""
        return self.schedule.claim_due(now, limit, lease)

    def reserve_send(
        self,
        member: str,
        email: str,
        now: float,
        cap_seconds: float,
        capped: bool,
        stale_after: float,
    ) -> Reservation:
        return self.ledger.reserve(member, email, now, cap_seconds, capped, stale_after)

    def ledger_state(self, member: str) -> str | None:
        return self.ledger.state(member)

    def unknown_count(self) -> int:
        return self.ledger.unknown_count()

    def unknown_outcomes(self, limit: int = 100) -> list[tuple[str, float]]:
        return self.ledger.unknown_outcomes(limit)

    def suppress_email(self, email: str, reason: str) -> bool:
        return self.suppressions.suppress(email, reason)

    def email_suppressed(self, email: str) -> str | None:
        return self.suppressions.reason(email)

    def suppressed_count(self) -> int:
        return self.suppressions.count()

    def webhook_event_new(self, provider_event_id: str) -> bool:
        return self.events.webhook_event_new(provider_event_id)

    def dead_letter(self, kind: str, reason: str, payload: Mapping[str, Any]) -> None:
        self.dead.add(kind, reason, payload)

    def dead_letters(self, limit: int = 20) -> list[dict[str, str]]:
        return self.dead.latest(limit)

    def dead_letter_count(self) -> int:
        return self.dead.count()

    def count(self, sequence: str, step: str, counter: str, amount: int = 1) -> None:
        self.counters.count(sequence, step, counter, amount)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        return self.counters.stats()

    def global_counters(
        self, stats: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None
    ) -> dict[str, float]:
        return self.counters.global_counters(stats)


def layout1_markers(prefix: str) -> list[str]:
    """Global keys only the older, untagged layout has: any of them means the state
    needs ``nurture migrate state``."""
    return [f"{prefix}:{name}" for name in ("sched", "claimed", "stats", "unknown", "suppressed")]
