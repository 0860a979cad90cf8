"""Leaving: deletion and erasure (issue 11, item 3). After a lead.deleted (or ``nurture
forget``) nothing pending goes out, and the person's address appears nowhere in Redis:
every key and value of the test Redis is scanned. Only a keyed hash of the address stays,
in the suppression list, so the address is never mailed again. Real Redis, inline queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis

from tests.harness import Harness, event, running

INLINE_QUEUE = True

ADDRESS = "ann@example.com"
PROFILE = {
    "first_name": "Annabel",
    "last_name": "Bergström",
    "company": "Berg ApS",
    "source": "website",
    "timezone": "Europe/Copenhagen",
    "attributes": {"industry": "saas", "budget": 5000},
}
#: Personal data that must be gone (the address, names, company).
PERSONAL = [ADDRESS, "Annabel", "Bergström", "Berg ApS"]


def texts(value: Any) -> list[str]:
    """Every text in a redis-py answer (bytes decoded as UTF-8, JSON escapes undone)."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
        try:  # JSON inside (lead data, event payloads, nested event text)
            decoded = json.loads(text)
        except ValueError:
            return [text]
        return [text, *texts(decoded)] if not isinstance(decoded, str) else [text, decoded]
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return [value]
        return [value, *texts(decoded)] if not isinstance(decoded, str | int | float) else [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (*texts(k), *texts(v))]
    if isinstance(value, list | tuple | set):
        return [t for item in value for t in texts(item)]
    return [str(value)]


def everything_in(client: redis.Redis) -> str:
    """Every key and every value of the Redis, as one lower-case text."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        parts.extend(texts(key))
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            raise AssertionError(f"unexpected key type {kind} for {key!r}")
        parts.extend(texts(value))
    return "\n".join(parts).lower()


def assert_forgotten(h: Harness) -> None:
    text = everything_in(h.rt.store.redis)
    for item in PERSONAL:
        assert item.lower() not in text, f"{item!r} is still in Redis"


def start_and_send_first(h: Harness) -> None:
    h.emit(event("c", "lead.created", email=ADDRESS, **PROFILE))
    h.advance(timedelta(minutes=10))
    assert [step for _, _, step in h.sent()] == ["outcome-story"]
    # A dead letter holding the person's event (an unknown field refused in the queue).
    bad = {"id": "bad", "type": "lead.updated", "lead": {"id": "lead-1", "email": ADDRESS}}
    bad["lead"]["nickname"] = "Annabel"  # type: ignore[index]
    h.rt.actors.process_events.send([json.dumps(bad)])
    h.settle()
    assert ADDRESS in json.dumps(h.dead_letters())
    text = everything_in(h.rt.store.redis)
    assert all(item.lower() in text for item in PERSONAL)  # the scan does see them


def test_lead_deleted_stops_everything_and_erases_the_address(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        start_and_send_first(h)
        h.emit(event("d", "lead.deleted", email=None, data={"reason": "deleted-in-crm"}))
        h.settle()
        assert h.rt.store.scheduled_for("lead-1") == []
        assert_forgotten(h)
        # The address comes back as a new lead, and a late event for the erased one.
        h.emit(event("again", "lead.created", lead_id="lead-2", email=ADDRESS, **PROFILE))
        h.emit(event("late", "lead.updated", email=ADDRESS, first_name="Annabel"))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert [step for _, _, step in h.sent()] == ["outcome-story"]  # nothing after
    assert h.rt.store.email_suppressed(ADDRESS) == "deleted-in-crm"
    erased = h.rt.store.get_lead("lead-1")
    assert erased is not None and erased.data == {} and erased.flags["erased"]


def test_forget_by_address_erases_every_lead_using_it(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        start_and_send_first(h)
        assert h.rt.processor.forget(ADDRESS.upper()) == ["lead-1"]
        assert_forgotten(h)
        h.emit(event("again", "lead.created", lead_id="lead-3", email=ADDRESS, **PROFILE))
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert [step for _, _, step in h.sent()] == ["outcome-story"]


def test_forget_by_lead_id(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        start_and_send_first(h)
        assert h.rt.processor.forget("lead-1") == ["lead-1"]
        assert h.rt.processor.forget("lead-1") == []  # already erased
        assert_forgotten(h)
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert [step for _, _, step in h.sent()] == ["outcome-story"]
