"""Ingest: replay guard lifetimes, and what is kept when Redis fails halfway."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.harness import Harness, event, running
from worker.errors import StoreUnavailableError
from worker.store import EVENT_DEDUP_SECONDS, EVENT_PENDING_SECONDS

#: Messages run inline on dramatiq's StubBroker (see tests/harness.py): no worker threads.
INLINE_QUEUE = True


def _down(*_: object, **__: object) -> None:
    raise redis.ConnectionError("Redis went away")


def _ttl(h: Harness, event_id: str) -> int:
    return int(h.rt.store.redis.ttl(h.rt.store.keys.event(event_id)))


def test_queued_event_is_guarded_for_the_whole_dedup_window(
    make_harness: Callable[..., Harness],
) -> None:

    h = make_harness()
    assert h.emit(event("e1")).accepted == 1
    assert _ttl(h, "e1") > 7 * 86400
    assert h.emit(event("e1")).duplicates == 1


def test_processing_keeps_the_window(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1"))
        h.settle()
    store = h.rt.store
    assert store.redis.get(store.keys.event("e1")) == b"done"
    assert _ttl(h, "e1") > 7 * 86400


def test_done_mark_never_lives_forever(make_harness: Callable[..., Harness]) -> None:
    """An event applied after its guard expired gets a fresh window, not an eternal key."""
    h = make_harness()
    h.rt.store.events.applied("old")
    assert 0 < _ttl(h, "old") <= EVENT_DEDUP_SECONDS


def test_redis_failing_between_mark_and_queue_does_not_block_the_retry_for_days(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness()

    monkeypatch.setattr(h.rt.actors.process_events, "send", _down)
    monkeypatch.setattr(h.rt.store.events, "forget", _down)
    with pytest.raises(StoreUnavailableError):
        h.emit(event("e1"))
    # The mark could not be undone; it expires soon, so the sender's retry gets through.
    assert 0 < _ttl(h, "e1") <= EVENT_PENDING_SECONDS
    monkeypatch.undo()
    h.rt.store.redis.delete(h.rt.store.keys.event("e1"))  # as after EVENT_PENDING_SECONDS
    assert h.emit(event("e1")).accepted == 1


def test_guard_not_extended_still_accepts(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued but the guard could not be extended: the events are accepted all the same."""
    h = make_harness()

    monkeypatch.setattr(h.rt.store.events, "confirm", _down)
    assert h.emit(event("e1"), event("e2")).accepted == 2
    assert 0 < _ttl(h, "e1") <= EVENT_PENDING_SECONDS
    monkeypatch.undo()
    with running(h):
        h.settle()
    assert h.rt.store.redis.get(h.rt.store.keys.event("e2")) == b"done"
