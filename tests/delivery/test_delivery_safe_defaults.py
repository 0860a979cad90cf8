"""Safe sending defaults (issue 13, item 5).

Field names of the v3 Mail Send body (``tracking_settings.click_tracking.enable`` /
``enable_text``, ``open_tracking.enable``, ``subscription_tracking.enable``,
``mail_settings.sandbox_mode.enable``, ``reply_to``) are SendGrid's, from
https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send ; the tests also
compare them with what the official ``sendgrid`` library's mail helpers produce.
``List-Unsubscribe`` with an https and a ``mailto:`` URI: RFC 2369 section 3.2 and
RFC 8058 (https://www.rfc-editor.org/rfc/rfc8058).
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from pathlib import Path

import pytest
from sendgrid.helpers.mail import (
    ClickTracking,
    MailSettings,
    OpenTracking,
    ReplyTo,
    SandBoxMode,
    SubscriptionTracking,
    TrackingSettings,
)

from tests.sendgrid_standin import SendGridStandIn
from worker.delivery.base import Message, unsubscribe_mailto
from worker.delivery.outbox import render_eml
from worker.delivery.sendgrid import SendGridDelivery, build_payload
from worker.errors import SettingsError
from worker.settings import Settings, public_url_problem

MESSAGE = Message(
    key="lead-1.value-first.1.outcome-story",
    to_email="ann@example.com",
    to_name="Ann",
    from_email="maria@acme.example",
    from_name="Maria Holm",
    subject="Hello",
    text="Hi Ann,\n\nA note.\n",
    html=None,
    unsubscribe_url="https://nurture.example/unsubscribe/tok123",
    lead_id="lead-1",
    sequence="value-first",
    step="outcome-story",
)


def test_tracking_is_explicit_and_off_by_default() -> None:
    payload = build_payload(MESSAGE)
    expected = TrackingSettings(
        click_tracking=ClickTracking(False, False),
        open_tracking=OpenTracking(False),
        subscription_tracking=SubscriptionTracking(False),
    ).get()
    assert payload["tracking_settings"] == expected
    assert "reply_to" not in payload
    assert "mail_settings" not in payload


def test_tracking_per_sequence_never_rewrites_plain_text_links() -> None:
    payload = build_payload(replace(MESSAGE, track_opens=True, track_clicks=True))
    assert payload["tracking_settings"] == {
        "click_tracking": {"enable": True, "enable_text": False},
        "open_tracking": {"enable": True},
        "subscription_tracking": {"enable": False},  # the worker has its own
    }


def test_reply_to_and_sandbox_match_the_library() -> None:
    message = replace(MESSAGE, reply_to_email="team@acme.example", reply_to_name="Team")
    payload = build_payload(message, sandbox=True)
    assert payload["reply_to"] == ReplyTo("team@acme.example", "Team").get()
    assert payload["mail_settings"] == MailSettings(sandbox_mode=SandBoxMode(True)).get()


def test_mailto_follows_the_https_link_in_list_unsubscribe(tmp_path: Path) -> None:
    mailto = unsubscribe_mailto("unsubscribe@acme.example", MESSAGE.unsubscribe_url)
    assert mailto == "mailto:unsubscribe@acme.example?subject=unsubscribe%20tok123"
    message = replace(MESSAGE, unsubscribe_mailto=mailto)
    header = f"<{MESSAGE.unsubscribe_url}>, <{mailto}>"
    assert build_payload(message)["headers"]["List-Unsubscribe"] == header
    parsed = email.message_from_bytes(render_eml(message), policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == header
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_standin_records_tracking_reply_to_and_sandbox() -> None:
    message = replace(MESSAGE, reply_to_email="team@acme.example", track_opens=True)
    with SendGridStandIn() as standin:
        delivery = SendGridDelivery(standin.api_key, standin.url, sandbox=True)
        try:
            delivery.send(message)
        finally:
            delivery.close()
        [received] = standin.messages
    assert received.reply_to == {"email": "team@acme.example"}
    assert received.tracking_settings["open_tracking"] == {"enable": True}
    assert received.tracking_settings["subscription_tracking"] == {"enable": False}
    assert received.mail_settings == {"sandbox_mode": {"enable": True}}


# ------------------------------------------------------------------ refusing to start


def _sendgrid_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "delivery": "sendgrid",
        "sendgrid_api_key": "SG.key",
        "from_email": "hello@acme.example",
        "from_name": "Acme",
        "postal_address": "1 Main St",
        "public_url": "https://nurture.acme.example",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://localhost:8000", "is not https"),
        ("http://nurture.acme.example", "is not https"),
        ("https://localhost:8443", "names a local host (localhost)"),
        ("https://127.0.0.1", "names a local address (127.0.0.1)"),
        ("https://10.1.2.3", "names a local address (10.1.2.3)"),
        ("https://[::1]:8000", "names a local address (::1)"),
        ("https://worker:8000", "names a host without a domain (worker)"),
        ("https://nurture.internal", "names a local host (nurture.internal)"),
    ],
)
def test_sendgrid_refuses_an_unsubscribe_link_that_cannot_work(url: str, why: str) -> None:
    assert public_url_problem(url) == why
    with pytest.raises(SettingsError) as caught:
        _sendgrid_settings(public_url=url).require_sending()
    assert str(caught.value).startswith(f"NURTURE_PUBLIC_URL={url.rstrip('/')} {why}")


def test_sendgrid_wants_a_sender_name() -> None:
    with pytest.raises(SettingsError, match=r"NURTURE_FROM_NAME \(or NURTURE_SENDER_NAME\)"):
        _sendgrid_settings(from_name=None).require_sending()
    _sendgrid_settings(from_name=None, sender_name="Maria Holm").require_sending()
    _sendgrid_settings().require_sending()


def test_the_outbox_still_starts_with_a_local_url() -> None:
    settings = _sendgrid_settings(delivery="outbox", public_url="http://localhost:8000")
    settings.require_sending()
    assert public_url_problem("https://nurture.acme.example") is None


def test_sender_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="meeting_url"):
        _sendgrid_settings(meeting_url="cal.example.com/maria")
    with pytest.raises(ValueError, match="unsubscribe_mailbox"):
        _sendgrid_settings(unsubscribe_mailbox="not an address")
