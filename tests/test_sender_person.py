"""A person as sender (issue 13, item 3): who an email comes from, where the reply goes
and who signs it — the CRM owner, the sequence's own ``from``/``reply_to``, the
settings — through the real pipeline, the real ``sendgrid`` library and the stand-in,
the outbox, and ``nurture preview``."""

from __future__ import annotations

import email
import email.policy
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.harness import Harness, event
from tests.sendgrid_standin import SendGridStandIn
from tests.test_pipeline import INBOUND
from worker.preview import preview
from worker.senders import Address, SenderDefaults, SequenceSender, resolve
from worker.sequences import load_catalog

INLINE_QUEUE = True

DEFAULTS = SenderDefaults(
    from_email="hello@acme.example",
    from_name="Acme",
    reply_to="team@acme.example",
    name="Maria Holm",
    title="Partner",
    meeting_url="https://cal.example.com/maria",
)
OWNER = {
    "owner_name": "Jonas Berg",
    "owner_email": "jonas@acme.example",
    "owner_title": "Account manager",
}


# ------------------------------------------------------------------ resolution rules


def test_settings_alone_sign_and_take_replies() -> None:
    who = resolve(DEFAULTS, None, {"id": "l"})
    assert who.from_ == Address("hello@acme.example", "Acme")
    assert who.reply_to == Address("team@acme.example")
    assert who.signature.as_context() == {
        "name": "Maria Holm",
        "title": "Partner",
        "meeting_url": "https://cal.example.com/maria",
        "email": "hello@acme.example",
    }


def test_sender_name_is_the_from_name_when_no_from_name_is_set() -> None:
    who = resolve(SenderDefaults("hello@acme.example", name="Maria Holm"), None, {})
    assert who.from_ == Address("hello@acme.example", "Maria Holm")
    assert who.reply_to is None


def test_owner_in_the_sending_domain_sends_signs_and_gets_replies() -> None:
    who = resolve(DEFAULTS, None, OWNER)
    assert who.from_ == Address("jonas@acme.example", "Jonas Berg")
    assert who.reply_to == Address("jonas@acme.example", "Jonas Berg")
    # Only the owner's own fields: never Maria's meeting link under Jonas's name.
    assert who.signature.as_context() == {
        "name": "Jonas Berg",
        "title": "Account manager",
        "email": "jonas@acme.example",
    }


def test_owner_outside_the_sending_domain_keeps_the_authenticated_address() -> None:
    lead = {"owner_name": "Jonas Berg", "owner_email": "jonas@gmail.com"}
    who = resolve(DEFAULTS, None, lead)
    assert who.from_ == Address("hello@acme.example", "Jonas Berg")  # DMARC-safe
    assert who.reply_to == Address("jonas@gmail.com", "Jonas Berg")


def test_a_broken_owner_address_falls_back_to_the_settings() -> None:
    who = resolve(DEFAULTS, None, {"owner_email": "not an address"})
    assert who.from_ == Address("hello@acme.example", "Acme")
    assert who.reply_to == Address("team@acme.example")
    assert who.signature.name == "Maria Holm"


def test_the_sequence_from_and_reply_to_win_over_the_settings() -> None:
    seq = SequenceSender(
        from_=Address("ole@acme.example", "Ole Holm"),
        reply_to=Address("ole@acme.example", "Ole Holm"),
        title="Founder",
    )
    who = resolve(DEFAULTS, seq, {})
    assert who.from_ == Address("ole@acme.example", "Ole Holm")
    assert who.reply_to == Address("ole@acme.example", "Ole Holm")
    # Maria's meeting link is not offered under Ole's name.
    assert who.signature.as_context() == {
        "name": "Ole Holm",
        "title": "Founder",
        "email": "ole@acme.example",
    }
    # ... and the owner wins over the sequence.
    assert resolve(DEFAULTS, seq, OWNER).signature.name == "Jonas Berg"


# ------------------------------------------------------------------ sequence YAML


def _load(tmp_path: Path, extra: str) -> tuple[object, list[str]]:
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "s.yaml").write_text(
        "id: s\ntrigger: {event: lead.created}\n"
        + textwrap.dedent(extra)
        + "steps:\n  - {id: a, wait: 1h, template: value/guide}\n"
    )
    catalog, problems = load_catalog(folder)
    return catalog.sequences.get("s"), [str(p) for p in problems]


def test_sequence_from_reply_to_and_tracking_are_read(tmp_path: Path) -> None:
    sequence, problems = _load(
        tmp_path,
        """\
        from: {email: ole@acme.example, name: Ole Holm, title: Founder}
        reply_to: sales@acme.example
        tracking: {opens: true}
        """,
    )
    assert problems == []
    assert sequence.sender == SequenceSender(  # type: ignore[attr-defined]
        Address("ole@acme.example", "Ole Holm"), Address("sales@acme.example"), "Founder"
    )
    assert sequence.tracking.opens and not sequence.tracking.clicks  # type: ignore[attr-defined]


def test_tracking_is_off_unless_the_sequence_says(tmp_path: Path) -> None:
    sequence, problems = _load(tmp_path, "")
    assert problems == []
    assert not sequence.tracking.opens and not sequence.tracking.clicks  # type: ignore[attr-defined]
    assert sequence.sender is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("from: {email: ole@}\n", "s.yaml:3: `from.email`"),
        ("from: {email: a@acme.example, nmae: A}\n", "did you mean `name`?"),
        ("reply_to: {name: Sales}\n", "s.yaml:3: `reply_to` needs an email"),
        ("tracking: {opens: yes please}\n", "s.yaml:3: `tracking.opens` must be true or false"),
        (
            "from: {email: a@acme.example, meeting_url: cal.example/a}\n",
            "`from.meeting_url` 'cal.example/a' is not an https:// link",
        ),
    ],
)
def test_sequence_mail_keys_name_the_line_and_the_fix(
    tmp_path: Path, extra: str, expected: str
) -> None:
    sequence, problems = _load(tmp_path, extra)
    assert sequence is None
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------ end to end


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as standin:
        yield standin


def test_owner_signs_and_gets_the_reply_through_sendgrid(
    make_harness: Callable[..., Harness], sendgrid: SendGridStandIn
) -> None:
    harness = make_harness(
        delivery="sendgrid",
        sendgrid_host=sendgrid.url,
        sendgrid_api_key=sendgrid.api_key,
        from_email="hello@nurture.example",
        sender_name="Maria Holm",
        sender_title="Partner",
        meeting_url="https://cal.example.com/maria",
    )
    owner = {"owner_name": "Jonas Berg", "owner_email": "jonas@nurture.example"}
    harness.emit(event("e1", **INBOUND))
    harness.emit(event("e2", lead_id="lead-2", email="bo@example.com", **INBOUND, **owner))
    harness.advance(timedelta(minutes=10))
    by_lead = {m.custom_args["lead_id"]: m for m in sendgrid.messages}
    assert set(by_lead) == {"lead-1", "lead-2"}
    plain, owned = by_lead["lead-1"], by_lead["lead-2"]

    assert plain.payload["from"] == {"email": "hello@nurture.example", "name": "Nurture Team"}
    assert plain.reply_to is None
    assert "Maria Holm, Partner" in (plain.text or "")
    assert "https://cal.example.com/maria" in (plain.text or "")

    assert owned.payload["from"] == {"email": "jonas@nurture.example", "name": "Jonas Berg"}
    assert owned.reply_to == {"email": "jonas@nurture.example", "name": "Jonas Berg"}
    assert "Jonas Berg" in (owned.text or "")
    assert "Maria Holm" not in (owned.text or "")


def test_outbox_sets_reply_to(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(reply_to="team@nurture.example", sender_name="Maria Holm")
    harness.emit(event("e1", **INBOUND))
    harness.advance(timedelta(minutes=10))
    files = sorted(harness.outbox.glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["Reply-To"] == "team@nurture.example"
    assert "Maria Holm" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_preview_shows_from_reply_to_and_the_signature(
    make_settings: Callable[..., object],
) -> None:
    settings = make_settings(sender_name="Maria Holm", sender_title="Partner")
    lead = {"id": "p1", "email": "ann@example.com", "first_name": "Ann", **OWNER}
    lead["owner_email"] = "jonas@nurture.example"
    text = preview(settings, "value-first", lead, None, "outcome-story")  # type: ignore[arg-type]
    assert "From: Jonas Berg <jonas@nurture.example>" in text
    assert "Reply-To: Jonas Berg <jonas@nurture.example>" in text
    assert "Jonas Berg, Account manager" in text
