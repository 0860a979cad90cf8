"""``SendGridDelivery.send_many``: many sends in flight, each outcome reported on its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.delivery.test_delivery_sendgrid import make_message
from tests.sendgrid_standin import SendGridStandIn
from worker.delivery.base import Message, SendResult
from worker.delivery.sendgrid import SendGridDelivery
from worker.errors import (
    OutcomeUnknownError,
    PermanentDeliveryError,
    SettingsError,
    TransientDeliveryError,
)


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn(slow_delay=1.0) as server:
        yield server


def batch(count: int, tag: str = "lead") -> list[Message]:
    return [
        make_message(key=f"{tag}-{i}.value-first.1.case-study", lead_id=f"{tag}-{i}")
        for i in range(count)
    ]


def test_overlaps_the_waiting_and_reports_each_message_in_order(
    standin: SendGridStandIn,
) -> None:
    standin.latency(0.1)
    delivery = SendGridDelivery(standin.api_key, standin.url, timeout=5, concurrency=20)
    messages = batch(40)
    try:
        started = time.monotonic()
        results = delivery.send_many(messages)
        elapsed = time.monotonic() - started
    finally:
        delivery.close()
    # 40 sends of 0.1 s one after another take 4 s; 20 in flight take about 0.2 s.
    assert elapsed < 1.5, elapsed
    assert all(isinstance(r, SendResult) and r.provider_id for r in results)
    by_lead = {m.custom_args["lead_id"]: m.message_id for m in standin.messages}
    assert len(by_lead) == 40 == standin.accepted  # each exactly once
    for message, result in zip(messages, results, strict=True):
        assert isinstance(result, SendResult)
        assert by_lead[message.lead_id] == result.provider_id
    assert delivery.transport is not None and delivery.transport.connects <= 20


def test_every_outcome_class_is_reported_per_message(standin: SendGridStandIn) -> None:
    # One request in flight at a time, so the scripted answers meet the messages in order.
    delivery = SendGridDelivery(standin.api_key, standin.url, timeout=0.5, concurrency=1)
    standin.script([202, 429, 400, "lost", 503, "slow", 202])
    try:
        results = delivery.send_many(batch(7))
    finally:
        delivery.close()
    kinds = [type(r) for r in results]
    assert kinds == [
        SendResult,
        TransientDeliveryError,  # 429
        PermanentDeliveryError,  # 400
        OutcomeUnknownError,  # accepted, answer lost
        TransientDeliveryError,  # 503
        OutcomeUnknownError,  # answered after the timeout
        SendResult,
    ]
    rate_limited = results[1]
    assert isinstance(rate_limited, TransientDeliveryError) and rate_limited.retry_after
    assert "lead-3" in str(results[3])  # the message is named
    # Accepted: the first, the "lost" one, the slow one (after its delay) and the last.
    standin.wait_for(4, timeout=5)
    time.sleep(0.2)
    assert standin.accepted == 4


def test_bounded_pool_shared_by_callers_and_closed_cleanly(standin: SendGridStandIn) -> None:
    standin.latency(0.05)
    delivery = SendGridDelivery(standin.api_key, standin.url, timeout=5, concurrency=4)
    results = delivery.send_many(batch(30))
    assert all(isinstance(r, SendResult) for r in results)
    assert delivery.transport is not None and delivery.transport.connects <= 4
    assert delivery.send_many([]) == []
    single = delivery.send_many(batch(1, "single"))  # no pool needed for one
    assert isinstance(single[0], SendResult)
    delivery.close()
    assert standin.accepted == 31
    with pytest.raises(SettingsError, match="concurrency"):
        SendGridDelivery(standin.api_key, standin.url, concurrency=0)
