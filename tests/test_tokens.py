"""Unsubscribe tokens (issue 13, item 5): they do not reveal the lead id, cannot be
forged or altered, and links of the older signed form in emails already sent still
work."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from worker.tokens import make_token, read_token, signed_token

SECRET = "unsubscribe-test-secret"


def test_a_token_does_not_reveal_the_lead_id() -> None:
    token = make_token(SECRET, "crm-1042")
    assert "crm-1042" not in token
    padded = token + "=" * (-len(token) % 4)
    assert b"crm-1042" not in base64.urlsafe_b64decode(padded)
    assert read_token(SECRET, token) == "crm-1042"
    # Deterministic: a lead gets the same link in every email.
    assert make_token(SECRET, "crm-1042") == token


def test_older_signed_tokens_still_unsubscribe() -> None:
    old = signed_token(SECRET, "crm-1042")
    assert read_token(SECRET, old) == "crm-1042"
    assert read_token("another-secret", old) is None


@given(st.text(min_size=1, max_size=200))
def test_only_the_right_secret_reads_any_lead_id(lead_id: str) -> None:
    token = make_token(SECRET, lead_id)
    assert read_token(SECRET, token) == lead_id
    assert read_token("another-secret", token) is None
    flipped = ("B" if token[0] == "A" else "A") + token[1:]
    assert read_token(SECRET, flipped) is None
