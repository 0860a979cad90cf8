"""``nurture send-test`` (issue 12, item 5), as an operator runs it: one step's email to
the address given with ``--to``, through the configured delivery, marked as a test, and
nowhere in the ledger, the counters or the frequency cap.

SendGrid is the loopback stand-in answering as the v3 Mail Send API documents
(https://twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors).
"""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, nurture
from tests.sendgrid_standin import SendGridStandIn

pytestmark = pytest.mark.slow  # runs the CLI as subprocesses


def test_through_sendgrid_marked_and_not_recorded(
    cli_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    with SendGridStandIn() as standin:
        cli_env.update(
            {
                "NURTURE_DELIVERY": "sendgrid",
                "NURTURE_SENDGRID_HOST": standin.url,
                "NURTURE_SENDGRID_API_KEY": standin.api_key,
            }
        )
        result = nurture(
            [
                "send-test",
                "value-first",
                "--step",
                "case-study",
                "--to",
                "me@agency.example",
                "--lead",
                str(ROOT / "examples" / "lead.json"),
            ],
            cli_env,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        [message] = standin.messages
    assert message.to == ["me@agency.example"]  # never the lead's own address
    assert message.subject.startswith("[TEST] ")
    assert "sent a test of value-first/case-study to me@agency.example" in result.stdout
    assert "Ann" in (message.text or "")  # rendered for the lead in the file
    # Not a touch: no ledger, counters, cap clock or lead in Redis.
    client = redis.Redis.from_url(redis_url)
    assert client.keys("nurture:*") == []
    client.close()


def test_through_the_outbox_with_the_sample_lead(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = nurture(
        ["send-test", "value-first", "--step", "outcome-story", "--to", "me@agency.example"],
        cli_env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    [path] = (tmp_path / "outbox").glob("*.eml")
    email = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert email["To"] == "me@agency.example"
    assert str(email["Subject"]).startswith("[TEST] ")


def test_refused_without_to_and_with_unknown_names(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = nurture(["send-test", "value-first", "--step", "case-study"], cli_env, tmp_path)
    assert missing.returncode == 2
    assert "--to ADDRESS is required" in missing.stderr
    assert "Traceback" not in missing.stderr
    step = nurture(
        ["send-test", "value-first", "--step", "nope", "--to", "me@a.example"], cli_env, tmp_path
    )
    assert step.returncode == 1 and "its steps are: outcome-story" in step.stderr
    bad = nurture(
        ["send-test", "value-first", "--step", "case-study", "--to", "not-an-email"],
        cli_env,
        tmp_path,
    )
    assert bad.returncode == 1 and "--to:" in bad.stderr
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").glob("*.eml"))
