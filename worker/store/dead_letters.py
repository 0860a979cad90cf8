"""Dead letters: what could not be processed, with the reason, for the operator."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis

from worker.store.keys import Keys

DEAD_LETTER_MAXLEN = 1_000_000


class DeadLetterStore:
    """A capped stream of dead letters (bad events, failed touches, failed messages)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def add(self, kind: str, reason: str, payload: Mapping[str, Any]) -> None:
        """Keep something that could not be processed, with the reason."""
        self.redis.xadd(
            self.keys.dead,
            {
                "kind": kind,
                "reason": reason[:2000],
                "payload": json.dumps(payload, ensure_ascii=False, default=str)[:100_000],
                "at": repr(time.time()),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )

    def latest(self, limit: int = 20) -> list[dict[str, str]]:
        """The newest dead letters, newest first."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self.redis.xrevrange(self.keys.dead, count=limit),
        )
        return [
            {"id": entry_id.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
            for entry_id, fields in entries
        ]

    def erase_mentioning(self, needles: list[str], page: int = 1000) -> int:
        """Delete every dead letter whose text holds one of ``needles`` (case-insensitive:
        an erased person's address, lead id); returns how many were deleted."""
        wanted = [n.lower() for n in needles if n]
        deleted = 0
        start = "-"
        while wanted:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self.redis.xrange(self.keys.dead, min=start, count=page),
            )
            doomed = [
                entry_id
                for entry_id, fields in entries
                if any(
                    needle in value.decode(errors="replace").lower()
                    for value in fields.values()
                    for needle in wanted
                )
            ]
            if doomed:
                deleted += int(self.redis.xdel(self.keys.dead, *doomed))
            if len(entries) < page:
                break
            start = "(" + entries[-1][0].decode()
        return deleted

    def all(self, limit: int = 10_000) -> list[dict[str, str]]:
        """Up to ``limit`` dead letters, oldest first (for listing and retrying)."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self.redis.xrange(self.keys.dead, count=limit),
        )
        return [
            {"id": entry_id.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
            for entry_id, fields in entries
        ]

    def delete(self, ids: list[str]) -> int:
        """Remove dead letters by id (retried or discarded); returns how many went."""
        return int(self.redis.xdel(self.keys.dead, *ids)) if ids else 0

    def count(self) -> int:
        return int(self.redis.xlen(self.keys.dead))
