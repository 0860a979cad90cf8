"""Pauses: delivery paused by an account fault, and sequences paused by the operator.

Both are global flags every worker reads before it sends, so a pause taken by one
worker (or typed by an operator) holds for all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from worker.store.keys import Keys

#: The ``nurture pause --all`` entry of the paused-sequences hash.
ALL_SEQUENCES = "*"


@dataclass(frozen=True)
class DeliveryPause:
    """Why delivery is paused, and since when.

    Attributes:
        reason: The provider's answer that paused it (e.g. ``SendGrid 401: ...``).
        since: Unix time of the first fault of this pause.
    """

    reason: str
    since: float


@dataclass(frozen=True)
class PauseState:
    """Both pauses, read in one round trip (what the sender checks per touch).

    Attributes:
        delivery: The delivery pause, if any.
        sequences: Sequence ids (or ``*``) paused by ``nurture pause``, with since.
    """

    delivery: DeliveryPause | None
    sequences: dict[str, float]

    def sequence_paused(self, sequence_id: str) -> bool:
        return ALL_SEQUENCES in self.sequences or sequence_id in self.sequences


class PauseStore:
    """The delivery pause and the operator's sequence pauses."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    # -- delivery (account faults) -------------------------------------------------

    def pause_delivery(self, reason: str, since: float) -> bool:
        """Pause delivery; an existing pause keeps its ``since`` and takes the new reason.

        Returns:
            True when this call started the pause (it was not paused before).
        """
        key = self.keys.delivery_paused
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "since", repr(since))
        pipe.hset(key, "reason", reason[:500])
        started, _ = pipe.execute()
        return bool(started)

    def delivery(self) -> DeliveryPause | None:
        """The delivery pause, or None when delivery runs."""
        return _delivery(cast(dict[bytes, bytes], self.redis.hgetall(self.keys.delivery_paused)))

    def state(self) -> PauseState:
        """The delivery pause and the paused sequences, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.delivery_paused)
        pipe.hgetall(self.keys.paused_sequences)
        delivery, sequences = pipe.execute()
        return PauseState(_delivery(delivery), {k.decode(): float(v) for k, v in sequences.items()})

    def resume_delivery(self) -> bool:
        """End the delivery pause; True when there was one."""
        return bool(self.redis.delete(self.keys.delivery_paused))

    def take_turn(self, name: str, seconds: float) -> bool:
        """Take the turn ``name`` for ``seconds`` (one process of all gets it)."""
        ms = max(1, int(seconds * 1000))
        return bool(self.redis.set(self.keys.pause_turn(name), "1", nx=True, px=ms))

    # -- sequences (the operator's emergency pause) --------------------------------

    def pause_sequences(self, sequences: list[str], since: float) -> None:
        """Pause these sequences (``ALL_SEQUENCES`` pauses every one)."""
        if sequences:
            self.redis.hset(self.keys.paused_sequences, mapping={s: repr(since) for s in sequences})

    def resume_sequences(self, sequences: list[str]) -> int:
        """Resume these sequences; returns how many were paused."""
        if not sequences:
            return 0
        return int(self.redis.hdel(self.keys.paused_sequences, *sequences))

    def paused_sequences(self) -> dict[str, float]:
        """Sequence id (or ``*``) -> since, for every sequence paused by the operator."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.paused_sequences))
        return {k.decode(): float(v) for k, v in raw.items()}


def _delivery(raw: dict[bytes, bytes]) -> DeliveryPause | None:
    if not raw:
        return None
    return DeliveryPause(
        reason=raw.get(b"reason", b"").decode(), since=float(raw.get(b"since", b"0"))
    )
