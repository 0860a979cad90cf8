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

    def event(self, event_id: str) -> str:
        """String, set NX with a TTL: this event id was accepted (replay guard)."""
        return f"{self.prefix}:evt:{event_id}"

    def lead(self, lead_id: str) -> str:
        """Hash: ``data`` (lead JSON), ``email``, ``suppressed``, ``disq``, ``declined``,
        ``fit_sig``, ``last_touch``, ``seen:<event type>`` (latest occurred_at),
        ``held:<ledger field>`` (first due time of a touch the frequency cap holds back)."""
        return f"{self.prefix}:lead:{lead_id}"

    def lead_lock(self, lead_id: str) -> str:
        """Lock serialising the processing of one lead's events."""
        return f"{self.prefix}:lock:{lead_id}"

    def enrollments(self, lead_id: str) -> str:
        """Hash: sequence id -> enrollment JSON (one lead's enrollments, all states)."""
        return f"{self.prefix}:enr:{lead_id}"

    def ledger(self, lead_id: str) -> str:
        """Hash: touch field -> ``sending:<ts>`` | ``sent:<ts>`` | ``retry:<ts>`` |
        ``dead:<ts>`` | ``unknown:<ts>`` | ``skipped:<ts>``: the idempotency ledger."""
        return f"{self.prefix}:sent:{lead_id}"

    def received(self, lead_id: str) -> str:
        """Set: content item ids this lead has been sent (never the same piece twice)."""
        return f"{self.prefix}:recv:{lead_id}"

    def email_index(self, email: str) -> str:
        """Set: lead ids using this address (lower-cased)."""
        return f"{self.prefix}:email:{email.lower()}"

    def suppressed_email(self, email: str) -> str:
        """String: why this address is suppressed (bounce, spamreport, unsubscribe...)."""
        return f"{self.prefix}:supp:{email.lower()}"

    @property
    def suppressed_set(self) -> str:
        """Set: every suppressed address, for counting."""
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
        """Hash: ``<step>:<counter>`` -> count (sent, failed, delivered, open, click...)."""
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
        """Stream, capped and expiring (see ``worker/store/timeline.py``): what happened
        to this lead, one JSON entry per event, field change, enrollment, exit, touch,
        skip, decline and provider report, for ``nurture lead``."""
        return f"{self.prefix}:tl:{lead_id}"

    @property
    def heartbeat(self) -> str:
        """Hash: scheduler id -> last tick time (for status and lag)."""
        return f"{self.prefix}:schedulers"


def dramatiq_queue_keys(namespace: str, queue: str) -> tuple[str, str, str]:
    """dramatiq's Redis layout for one queue: the list of ready message ids, the delay
    queue (also a list; most delayed messages sit in worker memory), the dead-letter zset."""
    return f"{namespace}:{queue}", f"{namespace}:{queue}.DQ", f"{namespace}:{queue}.XQ"
