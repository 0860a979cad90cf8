"""Dead letters an operator can read and act on (issue 12, item 2): ``nurture
dead-letters`` lists them with the reason, lead, sequence/step and time; ``nurture retry``
sends failed touches again through the idempotency ledger (never a duplicate) and
re-queues failed events; ``nurture discard`` forgets them.

SendGrid's per-message refusal is its documented 400 body
(https://twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors),
served by the loopback stand-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import nurture
from tests.harness import Harness, event, running
from tests.sendgrid_standin import SendGridStandIn
from tests.test_pipeline import INBOUND
from worker import dead_letters

BAD_ADDRESS = {"status": 400, "errors": [{"message": "Invalid to address", "field": "to"}]}


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as standin:
        yield standin


@pytest.fixture
def harness(make_harness: Callable[..., Harness], sendgrid: SendGridStandIn) -> Harness:
    return make_harness(
        delivery="sendgrid", sendgrid_host=sendgrid.url, sendgrid_api_key=sendgrid.api_key
    )


def _steps(standin: SendGridStandIn, lead: str = "lead-1") -> list[str]:
    return [m.custom_args["step"] for m in standin.messages if m.custom_args["lead_id"] == lead]


def test_a_refused_touch_is_listed_retried_once_and_never_duplicated(
    harness: Harness, sendgrid: SendGridStandIn
) -> None:
    sendgrid.script([BAD_ADDRESS])
    with running(harness):
        harness.emit(event("e1", **INBOUND))
        harness.advance(timedelta(minutes=10))
        assert _steps(sendgrid) == []
        [letter] = dead_letters.load(harness.rt)
        assert letter.kind == "touch"
        assert letter.category == "refused by sendgrid"
        assert (letter.lead, letter.sequence, letter.step) == (
            "lead-1",
            "value-first",
            "outcome-story",
        )
        assert "Invalid to address" in letter.reason
        assert dead_letters.counts_by_category([letter]) == [("refused by sendgrid", 1)]
        # The failed touch's enrollment moved on; the retry does not move it.
        before = harness.rt.store.enrollment("lead-1", "value-first")
        # Two operators retry at once: the ledger still lets one email out.
        first = dead_letters.retry(harness.rt, [letter])
        second = dead_letters.retry(harness.rt, [letter])
        assert first.touches == 1 and first.refused == []
        assert second.touches == 1  # reopened already: scheduled again, same touch
        harness.settle()
        assert _steps(sendgrid) == ["outcome-story"]
        assert harness.rt.store.ledger_state(letter.touch).startswith("sent:")
        assert harness.rt.store.enrollment("lead-1", "value-first") == before
        assert dead_letters.load(harness.rt) == []
        stats = harness.rt.store.stats()["value-first"]["outcome-story"]
        assert stats["sent"] == 1 and stats["failed"] == 1
        # Once sent, a retry of the same letter is refused, naming why.
        third = dead_letters.retry(harness.rt, [letter])
        assert third.touches == 0
        assert third.refused == [(letter.id, "already sent; not sent again")]
        harness.settle()
        # The sequence goes on as it would have.
        harness.run_until(harness.clock.now().timestamp() + 30 * 86400)
    assert _steps(sendgrid) == ["outcome-story", "case-study", "testimonial", "how-to-guide"]


def test_a_failed_event_is_queued_again(harness: Harness, sendgrid: SendGridStandIn) -> None:
    raw = event("e9", lead_id="lead-9", email="nine@example.com", **INBOUND).to_json()
    with running(harness):
        # What the DeadLetters middleware keeps when process_events fails for good.
        harness.rt.store.dead.add("event", "processing failed: ConnectionError()", {"event": raw})
        [letter] = dead_letters.load(harness.rt)
        assert letter.lead == "lead-9" and letter.category == "processing failed"
        report = dead_letters.retry(harness.rt, dead_letters.select([letter], reason="processing"))
        assert report.events == 1
        harness.advance(timedelta(minutes=10))
    assert _steps(sendgrid, "lead-9") == ["outcome-story"]
    assert dead_letters.load(harness.rt) == []


def test_select_and_discard(harness: Harness) -> None:
    store = harness.rt.store
    store.dead.add("touch", "render failed: x", {"touch": "value-first\x1f1\x1fcase-study\x1fl1"})
    store.dead.add("touch", "refused by sendgrid: y", {"touch": "decline\x1f1\x1fpolite-no\x1fl2"})
    letters = dead_letters.load(harness.rt)
    assert [d.lead for d in dead_letters.select(letters, sequence="decline")] == ["l2"]
    assert [d.lead for d in dead_letters.select(letters, reason="render failed")] == ["l1"]
    discarded = dead_letters.discard(harness.rt, dead_letters.select(letters, reason="render"))
    assert discarded.gone == 1
    assert [d.lead for d in dead_letters.load(harness.rt)] == ["l2"]


def test_the_commands_through_the_cli(
    cli_env: dict[str, str], tmp_path: Path, harness: Harness
) -> None:
    store = harness.rt.store
    store.dead.add(
        "touch",
        "refused by sendgrid: SendGrid 400: Invalid to",
        {"touch": "value-first\x1f1\x1fcase-study\x1flead-7"},
    )
    listed = nurture(["dead-letters"], cli_env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("dead letters: 1\nby reason:\n       1  refused by sendgrid\n")
    assert "lead=lead-7  value-first/case-study  refused by sendgrid: SendGrid 400" in listed.stdout
    nothing = nurture(["retry"], cli_env, tmp_path)
    assert nothing.returncode == 2 and "say which dead letters" in nothing.stderr
    # Never reserved in the ledger: refused, kept.
    retried = nurture(["retry", "--all"], cli_env, tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "not retried" in retried.stdout and "never reserved" in retried.stdout
    dropped = nurture(["discard", "--sequence", "value-first"], cli_env, tmp_path)
    assert dropped.stdout.strip() == "discarded 1 dead letter(s)"
    assert nurture(["dead-letters"], cli_env, tmp_path).stdout.strip() == "dead letters: 0"
