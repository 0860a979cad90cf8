"""Engagement conditions end to end (issue 14, item 2): real dramatiq workers send
through the real ``sendgrid`` library to the loopback stand-in; the stand-in's messages
come back as signed Event Webhook batches to a real uvicorn; the next step branches on
what each lead clicked.

SendGrid echoes a message's ``custom_args`` as top-level fields of each event, and a
click event carries the clicked ``url``:
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.engagement_helpers import post_events, sendgrid_event, write_template
from tests.harness import Harness, event, running
from tests.http.helpers import LiveServer, SendgridSigner
from tests.sendgrid_standin import SendGridStandIn
from worker.runtime import Runtime

SEQUENCE = """\
id: engaged
trigger: lead.created
steps:
  - id: case-study
    wait: 0s
    template: value/case_study
  - id: for-clickers
    wait: 1d
    template: test/clicked
    when: {clicked: case-study}
  - id: for-others
    wait: 0s
    template: test/other
    when: {not: {clicked: case-study}}
"""
LEAD = {"first_name": "Ann", "attributes": {"industry": "saas", "problem": "churn"}}


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as standin:
        yield standin


@pytest.fixture
def harness(
    make_harness: Callable[..., Harness],
    catalog_dirs: dict[str, Path],
    sendgrid: SendGridStandIn,
    sendgrid_signer: SendgridSigner,
) -> Harness:
    sequences = catalog_dirs["sequences"]
    for path in sequences.glob("*.yaml"):
        if path.stem not in ("fit", "decline"):
            path.unlink()  # only the test's sequence enrolls, so every email is its own
    (sequences / "engaged.yaml").write_text(SEQUENCE, encoding="utf-8")
    templates = catalog_dirs["templates"]
    write_template(
        templates, "test/clicked", "More on churn", "Since you read the churn story: part two."
    )
    write_template(templates, "test/other", "Something shorter", "A two-minute read instead.")
    return make_harness(
        delivery="sendgrid",
        sendgrid_host=sendgrid.url,
        sendgrid_api_key=sendgrid.api_key,
        sendgrid_webhook_public_key=sendgrid_signer.public_key,
    )


@pytest.fixture
def live(serve: Callable[[Runtime], LiveServer], harness: Harness) -> LiveServer:
    return serve(harness.rt)


def test_a_lead_who_clicked_the_case_study_gets_the_clickers_follow_up(
    harness: Harness, live: LiveServer, sendgrid: SendGridStandIn, sendgrid_signer: SendgridSigner
) -> None:
    with running(harness):
        harness.emit(event("e1", lead_id="ann", email="ann@example.com", **LEAD))
        harness.emit(event("e2", lead_id="bob", email="bob@example.com", **LEAD))
        harness.advance(timedelta(seconds=1))
        sent = {m.custom_args["lead_id"]: m for m in sendgrid.wait_for(2)}
        assert {m.custom_args["step"] for m in sent.values()} == {"case-study"}
        assert sent["ann"].custom_args["generation"] == "1"
        link = re.search(r"https://example\.com/cases/\S+", sent["ann"].text or "")
        assert link is not None
        batch = [
            sendgrid_event(sent["ann"], "delivered", "d-ann"),
            sendgrid_event(sent["bob"], "delivered", "d-bob"),
            sendgrid_event(sent["bob"], "open", "o-bob"),  # opened, never clicked
            sendgrid_event(sent["ann"], "open", "o-ann"),
            sendgrid_event(sent["ann"], "click", "c-ann", url=link.group(0).rstrip(".")),
        ]
        response = post_events(live, sendgrid_signer, batch)
        assert response.status_code == 200
        assert response.json()["processed"] == 5
        harness.advance(timedelta(days=1, seconds=1))
        harness.advance(timedelta(seconds=1))
        sendgrid.wait_for(4)
    steps = sorted((m.custom_args["lead_id"], m.custom_args["step"]) for m in sendgrid.messages)
    assert steps == [
        ("ann", "case-study"),
        ("ann", "for-clickers"),
        ("bob", "case-study"),
        ("bob", "for-others"),
    ]
    clicker = next(m for m in sendgrid.messages if m.custom_args["step"] == "for-clickers")
    assert clicker.subject == "More on churn"
    facts = harness.rt.store.engagement.get("ann")
    assert "engaged:1|clicked:engaged/case-study" in facts
    # The link was the case study's own: the piece and its tags are remembered too.
    assert any(name.startswith("any|clicked_content:") for name in facts)
    assert "any|clicked_tag:churn" in facts
    assert "engaged:1|clicked:engaged/case-study" not in harness.rt.store.engagement.get("bob")
    assert harness.dead_letters() == []
