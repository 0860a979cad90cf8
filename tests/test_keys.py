"""The key builders: every key of one lead is built by ``Keys.per_lead``, so the Redis
Cluster layout can tag all of a lead's keys (new ones included) in one place."""

from __future__ import annotations

import inspect

from worker.store.keys import Keys


class Tagged(Keys):
    """Keys whose per-lead builder marks what it built."""

    def per_lead(self, kind: str, lead_id: str) -> str:
        return f"TAGGED:{super().per_lead(kind, lead_id)}"


def per_lead_builders() -> list[str]:
    """Every builder taking a ``lead_id`` (a key of one lead), however it is named."""
    return [
        name
        for name, member in inspect.getmembers(Keys, inspect.isfunction)
        if name != "per_lead" and "lead_id" in inspect.signature(member).parameters
    ]


def test_every_per_lead_key_is_built_by_per_lead() -> None:
    builders = per_lead_builders()
    assert {"lead", "lead_lock", "enrollments", "ledger", "received"} <= set(builders)
    tagged = Tagged("nurture")
    for name in builders:
        key = getattr(tagged, name)("lead-1")
        assert key.startswith("TAGGED:nurture:") and key.endswith(":lead-1"), name


def test_the_single_redis_layout_is_unchanged() -> None:
    keys = Keys("nurture")
    assert [keys.lead("l"), keys.lead_lock("l"), keys.enrollments("l")] == [
        "nurture:lead:l",
        "nurture:lock:l",
        "nurture:enr:l",
    ]
    assert [keys.ledger("l"), keys.received("l")] == ["nurture:sent:l", "nurture:recv:l"]
