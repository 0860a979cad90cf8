"""Every Redis key the worker uses, in one place, each with what it holds.

Only the store package (``worker/store/``) builds keys. All keys start with a prefix
(``nurture`` by default) so a Redis can be shared with other applications; dramatiq's
own keys live under its ``dramatiq`` namespace (see :func:`dramatiq_queue_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key builders for one prefix."""

    prefix: str = "nurture"

    def per_lead(self, kind: str, lead_id: str) -> str:
        """The one builder of every key that belongs to one lead: ``<prefix>:<kind>:<id>``.

        Every per-lead builder below goes through here (tests/test_keys.py checks it), so
        the Redis Cluster layout (docs/scale-notes.md, section 2: a ``{b<n>}`` bucket tag
        per lead, keeping all of a lead's keys, and the schedule shard its touches live
        in, in one slot) changes this one function and tags every per-lead key at once,
        those added later included. New per-lead keys: build them with this.
        """
        return f"{self.prefix}:{kind}:{lead_id}"

    def event(self, event_id: str) -> str:
        """String, set NX with a TTL: this event id was accepted (replay guard)."""
        return f"{self.prefix}:evt:{event_id}"

    def lead(self, lead_id: str) -> str:
        """Hash: ``data`` (lead JSON), ``email``, ``suppressed``, ``disq``, ``declined``,
        ``fit_sig``, ``last_touch``, ``seen:<event type>`` (latest occurred_at),
        ``held:<ledger field>`` (first due time of a touch the frequency cap holds back),
        ``fts`` (JSON: field -> time of its stored value), ``contactable`` (when the lead
        first became contactable), ``merged_into`` (the lead a CRM merge folded it into)."""
        return self.per_lead("lead", lead_id)

    def lead_lock(self, lead_id: str) -> str:
        """Lock serialising the processing of one lead's events."""
        return self.per_lead("lock", lead_id)

    def enrollments(self, lead_id: str) -> str:
        """Hash: sequence id -> packed enrollment (one lead's enrollments, all states;
        the form: ``worker/store/enrollments.py``)."""
        return self.per_lead("enr", lead_id)

    def ledger(self, lead_id: str) -> str:
        """Hash: touch field -> ``sending:<ts>`` | ``sent:<ts>`` | ``retry:<ts>`` |
        ``dead:<ts>`` | ``unknown:<ts>`` | ``skipped:<ts>``: the idempotency ledger."""
        return self.per_lead("sent", lead_id)

    def received(self, lead_id: str) -> str:
        """Set: content item ids this lead has been sent (never the same piece twice)."""
        return self.per_lead("recv", lead_id)

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
        """Set: lead ids using this address (lower-cased)."""
        return f"{self.prefix}:email:{email.lower()}"

    def suppressed_email(self, email: str) -> str:
        """String: why this address is suppressed (bounce, spamreport, unsubscribe...).
        Older data only: suppressions are now stored by :meth:`suppressed_hash`; this is
        still read."""
        return f"{self.prefix}:supp:{email.lower()}"

    def suppressed_hash(self, digest: str) -> str:
        """String: why the address whose keyed hash is ``digest`` is suppressed. The
        address itself is not stored (see :class:`~worker.store.suppressions.SuppressionStore`)."""
        return f"{self.prefix}:supph:{digest}"

    @property
    def suppression_secret(self) -> str:
        """String: the secret of the suppression list's keyed hashes (HMAC-SHA256),
        generated once. Losing it would make every suppression unreadable."""
        return f"{self.prefix}:supph-secret"

    @property
    def suppressed_set(self) -> str:
        """Set: every suppression, for counting: keyed hashes (older entries: addresses)."""
        return f"{self.prefix}:suppressed"

    @property
    def schedule(self) -> str:
        """Zset: touch id -> due unix time. The durable schedule."""
        return f"{self.prefix}:sched"

    @property
    def claimed(self) -> str:
        """Zset: touch id -> lease expiry. Claimed by a scheduler, not yet done."""
        return f"{self.prefix}:claimed"

    @property
    def unknown(self) -> str:
        """Zset: touch id -> time: sends whose outcome is unknown (crash mid-request)."""
        return f"{self.prefix}:unknown"

    @property
    def dead(self) -> str:
        """Stream: dead letters (bad events, failed touches) with the reason."""
        return f"{self.prefix}:dead"

    def stats(self, sequence: str) -> str:
        """Hash: ``<step>:<counter>`` -> count (sent, failed, delivered, open, click,
        converted...); ``<step>@<variant>:<counter>`` per A/B variant (sent, click,
        converted); ``_goal:converted`` and ``_goal:<event type>``: the sequence's
        conversions (a goal reached while enrolled)."""
        return f"{self.prefix}:stats:{sequence}"

    @property
    def stats_index(self) -> str:
        """Set: sequence ids that have stats."""
        return f"{self.prefix}:stats"

    @property
    def counters(self) -> str:
        """Hash: global counters (events accepted/refused by reason, lateness...)."""
        return f"{self.prefix}:counters"

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

    @property
    def parked(self) -> str:
        """Zset: touch id -> its due time: touches of a paused sequence, taken off the
        schedule until the sequence is resumed (then put back at that due time)."""
        return f"{self.prefix}:parked"

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
