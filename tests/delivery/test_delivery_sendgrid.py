"""The SendGrid backend against the local stand-in: payload shape and failure classes."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from tests.sendgrid_standin import Reply, SendGridStandIn
from worker.delivery import build_delivery
from worker.delivery.base import Message, SendResult
from worker.delivery.outbox import OutboxDelivery
from worker.delivery.sendgrid import (
    SendGridDelivery,
    build_payload,
    error_messages,
    retry_after_seconds,
)
from worker.errors import (
    AccountFaultError,
    OutcomeUnknownError,
    PermanentDeliveryError,
    SettingsError,
    TransientDeliveryError,
)
from worker.settings import Settings

UNSUBSCRIBE = "https://nurture.example/unsubscribe/eyJsIjoiY3JtLTEwNDIifQ.c2ln"


def make_message(**overrides: Any) -> Message:
    values: dict[str, Any] = {
        "key": "crm-1042.value-first.1.case-study",
        "to_email": "ann@example.com",
        "to_name": "Ann Berg",
        "from_email": "hello@nurture.example",
        "from_name": "Nurture Team",
        "subject": "Din case study, Søren – 你好",
        "text": "Hej Søren,\nher er din case study.\n",
        "html": "<p>Hej Søren,</p>",
        "unsubscribe_url": UNSUBSCRIBE,
        "lead_id": "crm-1042",
        "sequence": "value-first",
        "step": "case-study",
    }
    values.update(overrides)
    return Message(**values)


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn(slow_delay=1.0) as server:
        yield server


@pytest.fixture
def delivery(standin: SendGridStandIn) -> SendGridDelivery:
    return SendGridDelivery(standin.api_key, standin.url, timeout=0.4)


def free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- payload


def test_accepted_message_carries_everything_the_contract_requires(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    message = make_message(categories=("value-first", "nurture", "value-first"))

    result = delivery.send(message)

    (received,) = standin.messages
    assert result == SendResult(provider_id=received.message_id, duplicate=False)
    assert received.http_headers["authorization"] == f"Bearer {standin.api_key}"
    payload = received.payload
    assert payload["personalizations"] == [
        {"to": [{"email": "ann@example.com", "name": "Ann Berg"}]}
    ]
    assert payload["from"] == {"email": "hello@nurture.example", "name": "Nurture Team"}
    assert payload["subject"] == "Din case study, Søren – 你好"
    assert payload["content"] == [  # text/plain first: SendGrid requires that order
        {"type": "text/plain", "value": "Hej Søren,\nher er din case study.\n"},
        {"type": "text/html", "value": "<p>Hej Søren,</p>"},
    ]
    assert payload["headers"] == {
        "List-Unsubscribe": f"<{UNSUBSCRIBE}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert payload["custom_args"] == {
        "lead_id": "crm-1042",
        "sequence": "value-first",
        "step": "case-study",
    }
    assert payload["categories"] == ["value-first", "nurture"]


def test_text_only_message_without_names() -> None:
    payload = build_payload(make_message(html=None, to_name=None, from_name=None))
    assert payload["content"] == [{"type": "text/plain", "value": make_message().text}]
    assert payload["personalizations"][0]["to"] == [{"email": "ann@example.com"}]
    assert payload["from"] == {"email": "hello@nurture.example"}
    assert "categories" not in payload


def test_one_client_serves_many_threads(standin: SendGridStandIn) -> None:
    # What is tested is sharing one client; the module's 0.4 s timeout (for the slow
    # answer tests) would turn a loaded machine's late answers into outcome-unknown.
    delivery = SendGridDelivery(standin.api_key, standin.url, timeout=10)
    threads, each = 12, 15
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(each):
            try:
                delivery.send(make_message(key=f"k-{worker}-{i}", lead_id=f"lead-{worker}-{i}"))
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    leads = sorted(m.custom_args["lead_id"] for m in standin.messages)
    assert leads == sorted(f"lead-{w}-{i}" for w in range(threads) for i in range(each))


# ----------------------------------------------------------------- classification


def test_429_is_transient_with_retry_after_from_the_rate_limit_reset(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    standin.script([Reply(status=429, reset_in=30), 202])
    with pytest.raises(TransientDeliveryError) as caught:
        delivery.send(make_message())
    assert caught.value.retry_after is not None
    assert 28.0 <= caught.value.retry_after <= 30.0
    assert "429" in str(caught.value)
    # Nothing was accepted; the caller's retry then goes through.
    assert standin.messages == []
    assert delivery.send(make_message()).provider_id
    assert standin.requests == 2


def test_429_with_only_retry_after(standin: SendGridStandIn, delivery: SendGridDelivery) -> None:
    standin.script([Reply(status=429, reset_in=None, headers={"Retry-After": "7"})])
    with pytest.raises(TransientDeliveryError) as caught:
        delivery.send(make_message())
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_transient(
    standin: SendGridStandIn, delivery: SendGridDelivery, status: int
) -> None:
    standin.script([status])
    with pytest.raises(TransientDeliveryError, match=str(status)):
        delivery.send(make_message())


def test_400_is_permanent_with_sendgrids_message(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    standin.script(
        [
            Reply(
                status=400,
                errors=[
                    {
                        "message": "The from address does not match a verified Sender Identity",
                        "field": "from",
                        "help": None,
                    }
                ],
            )
        ]
    )
    with pytest.raises(PermanentDeliveryError) as caught:
        delivery.send(make_message())
    assert "400: The from address does not match a verified Sender Identity" in str(caught.value)
    assert "(field: from)" in str(caught.value)


def test_invalid_payload_is_refused_by_the_standin_as_sendgrid_would(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        delivery.send(make_message(text=""))  # SendGrid refuses an empty content value
    assert "400: The content value must be a string at least one character" in str(caught.value)
    assert "content.0.value" in str(caught.value)
    assert standin.messages == []


def test_unverified_sender_is_an_account_fault(standin: SendGridStandIn) -> None:
    """No message can go out from an unverified sender: delivery pauses (issue 12)."""
    standin.verified_senders = {"hello@nurture.example"}
    delivery = SendGridDelivery(standin.api_key, standin.url, timeout=2)
    with pytest.raises(AccountFaultError, match="403: The from address does not match"):
        delivery.send(make_message(from_email="someone@else.example"))
    assert delivery.send(make_message()).provider_id


def test_wrong_key_is_an_account_fault(standin: SendGridStandIn) -> None:
    delivery = SendGridDelivery("SG.wrong", standin.url, timeout=2)
    with pytest.raises(AccountFaultError, match="401: The provided authorization grant"):
        delivery.send(make_message())
    assert standin.messages == []


def test_connection_closed_before_the_answer_is_outcome_unknown(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    standin.script(["drop"])
    with pytest.raises(OutcomeUnknownError):
        delivery.send(make_message())
    assert standin.requests == 1
    assert standin.messages == []


def test_lost_answer_is_outcome_unknown_although_sendgrid_accepted(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    standin.script(["lost"])
    with pytest.raises(OutcomeUnknownError):
        delivery.send(make_message())
    # This is why the outcome is "unknown", not "failed": the message did get out.
    assert len(standin.messages) == 1


def test_answer_slower_than_the_timeout_is_outcome_unknown(
    standin: SendGridStandIn, delivery: SendGridDelivery
) -> None:
    standin.script(["slow"])  # 1.0 s against a 0.4 s timeout
    with pytest.raises(OutcomeUnknownError, match="timed out"):
        delivery.send(make_message())
    standin.wait_for(1, timeout=3)  # the stand-in accepted it after all


def test_connection_refused_is_transient() -> None:
    delivery = SendGridDelivery("SG.key", f"http://127.0.0.1:{free_closed_port()}", timeout=1)
    with pytest.raises(TransientDeliveryError, match="connection refused") as caught:
        delivery.send(make_message())
    assert caught.value.retry_after is None


def test_dns_failure_is_transient() -> None:
    delivery = SendGridDelivery("SG.key", "http://sendgrid-standin.invalid", timeout=2)
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        delivery.send(make_message())


def test_send_many_keeps_order(standin: SendGridStandIn) -> None:
    # One request in flight (concurrency=1), so the scripted answers meet the messages
    # in order; tests/delivery/test_send_many.py covers many in flight.
    delivery = SendGridDelivery(standin.api_key, standin.url, timeout=5, concurrency=1)
    standin.script([202, 429, 202])
    results = delivery.send_many([make_message(key=f"k{i}", lead_id=f"l{i}") for i in range(4)])
    delivery.close()
    assert [type(r).__name__ for r in results] == [
        "SendResult",
        "TransientDeliveryError",
        "SendResult",
        "SendResult",
    ]
    assert [m.custom_args["lead_id"] for m in standin.messages] == ["l0", "l2", "l3"]
    delivery.close()
    delivery.close()  # idempotent


def test_api_key_never_reaches_debug_logs(
    standin: SendGridStandIn, delivery: SendGridDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    delivery.send(make_message())
    assert standin.api_key not in caplog.text


# ------------------------------------------------------------------------ helpers


def test_retry_after_is_clamped_and_read_from_either_header() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) + 42)}, now) == 42.0
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) - 5)}, now) == 1.0
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) + 86_400)}, now) == 3600.0
    assert retry_after_seconds({"Retry-After": "12"}, now) == 12.0
    assert retry_after_seconds({"Retry-After": formatdate(now + 90, usegmt=True)}, now) == 90.0
    assert retry_after_seconds({"Retry-After": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None
    assert retry_after_seconds(None, now) is None


def test_error_messages_are_joined() -> None:
    body = (
        b'{"errors":[{"message":"first","field":"from","help":null},'
        b'{"message":"second","field":null}]}'
    )
    assert error_messages(body) == "first (field: from); second"
    assert error_messages(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert error_messages(b"") == ""


# ------------------------------------------------------------------ build_delivery


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_build_delivery_refuses_sendgrid_without_key() -> None:
    with pytest.raises(SettingsError, match="NURTURE_SENDGRID_API_KEY"):
        build_delivery(settings(delivery="sendgrid", sendgrid_api_key=None))


def test_build_delivery_makes_a_sendgrid_backend_for_the_configured_host(
    standin: SendGridStandIn,
) -> None:
    delivery = build_delivery(
        settings(delivery="sendgrid", sendgrid_api_key=standin.api_key, sendgrid_host=standin.url)
    )
    assert isinstance(delivery, SendGridDelivery)
    assert delivery.name == "sendgrid"
    delivery.send(make_message())
    assert len(standin.messages) == 1


def test_build_delivery_shares_the_rate_limits_and_sizes_the_pool_from_the_settings(
    standin: SendGridStandIn, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    delivery = build_delivery(
        settings(
            delivery="sendgrid",
            sendgrid_api_key=standin.api_key,
            sendgrid_host=standin.url,
            sendgrid_concurrency=7,
            sendgrid_max_rate=50,
        ),
        client,
    )
    try:
        assert isinstance(delivery, SendGridDelivery)
        assert delivery.concurrency == 7
        assert delivery.limiter is not None and delivery.limiter.max_rate == 50
        # Answers now carry X-RateLimit-Limit/Remaining/Reset, as SendGrid documents at
        # https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
        standin.rate_limit(100, period=60)
        results = delivery.send_many([make_message(key=f"k{n}") for n in range(3)])
        assert [type(r).__name__ for r in results] == ["SendResult"] * 3
        state = delivery.limiter.state()
        assert state["limit"] == 100 and state["tat"] > 0  # the shared state in Redis
    finally:
        delivery.close()
        client.close()


def test_settings_refuse_a_zero_concurrency_or_rate() -> None:
    with pytest.raises(ValidationError):
        settings(sendgrid_concurrency=0)
    with pytest.raises(ValidationError):
        settings(sendgrid_max_rate=0)


def test_build_delivery_makes_an_outbox(tmp_path: Path) -> None:
    delivery = build_delivery(settings(delivery="outbox", outbox_dir=tmp_path / "out"))
    assert isinstance(delivery, OutboxDelivery)
    assert delivery.name == "outbox"
    assert (tmp_path / "out").is_dir()


def test_build_delivery_names_an_unusable_outbox_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SettingsError, match="NURTURE_OUTBOX_DIR"):
        build_delivery(settings(delivery="outbox", outbox_dir=blocker / "outbox"))
