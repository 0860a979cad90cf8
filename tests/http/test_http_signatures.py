"""Signatures: our HMAC scheme (valid, expired, wrong secret, rotated, tampered),
HubSpot v3, basic auth and SendGrid's ECDSA, as functions and through the live server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from tests.harness import Harness
from tests.http.helpers import LiveServer, SendgridSigner, queued_events
from worker.http.signatures import (
    SignatureError,
    hubspot_uri,
    hubspot_v3_signature,
    load_sendgrid_key,
    parse_signature_header,
    sign,
    verify,
    verify_basic_auth,
    verify_hubspot_v3,
    verify_sendgrid,
)
from worker.runtime import Runtime

BODY = b'{"id":"e1","type":"lead.created","lead":{"id":"l1","email":"a@example.com"}}'
NOW = 1_800_000_000


def _code(call: Callable[[], object]) -> str:
    with pytest.raises(SignatureError) as info:
        call()
    return info.value.code


def test_signature_is_hmac_sha256_over_t_dot_body() -> None:
    header = sign("s3cret", BODY, NOW)
    expected = hmac.new(b"s3cret", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    verify(header, BODY, ["s3cret"], NOW)


def test_valid_within_tolerance_expired_outside() -> None:
    verify(sign("k", BODY, NOW - 300), BODY, ["k"], NOW)
    verify(sign("k", BODY, NOW + 300), BODY, ["k"], NOW)
    assert _code(lambda: verify(sign("k", BODY, NOW - 301), BODY, ["k"], NOW)) == (
        "signature_expired"
    )
    assert _code(lambda: verify(sign("k", BODY, NOW + 301), BODY, ["k"], NOW)) == (
        "signature_expired"
    )


def test_wrong_secret_and_tampered_body_are_refused() -> None:
    assert _code(lambda: verify(sign("other", BODY, NOW), BODY, ["k"], NOW)) == (
        "signature_mismatch"
    )
    tampered = BODY.replace(b"a@example.com", b"b@example.com")
    assert _code(lambda: verify(sign("k", BODY, NOW), tampered, ["k"], NOW)) == (
        "signature_mismatch"
    )
    # Moving the signature to another timestamp breaks it too.
    v1 = sign("k", BODY, NOW).split(",")[1]
    assert _code(lambda: verify(f"t={NOW + 1},{v1}", BODY, ["k"], NOW)) == "signature_mismatch"


def test_rotation_either_side() -> None:
    # The receiver accepts old and new while senders move over.
    verify(sign("new", BODY, NOW), BODY, ["old", "new"], NOW)
    verify(sign("old", BODY, NOW), BODY, ["old", "new"], NOW)
    # The sender signs with both while receivers move over.
    verify(sign(["old", "new"], BODY, NOW), BODY, ["new"], NOW)
    assert _code(lambda: verify(sign("old", BODY, NOW), BODY, ["new"], NOW)) == (
        "signature_mismatch"
    )


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "signature_missing"),
        ("", "signature_missing"),
        ("v1=" + "a" * 64, "signature_malformed"),
        (f"t={NOW}", "signature_malformed"),
        (f"t={NOW},v1=xyz", "signature_malformed"),
        (f"t=soon,v1={'a' * 64}", "signature_malformed"),
        ("garbage", "signature_malformed"),
        (f"t={NOW}," + ",".join(["v1=" + "a" * 64] * 9), "signature_malformed"),
        ("t=1," * 1000, "signature_malformed"),
    ],
)
def test_malformed_headers(header: str | None, code: str) -> None:
    assert _code(lambda: verify(header, BODY, ["k"], NOW)) == code


def test_no_secrets_refuses_everything() -> None:
    assert _code(lambda: verify(sign("k", BODY, NOW), BODY, [], NOW)) == "no_secrets"


def test_unknown_schemes_are_skipped() -> None:
    header = sign("k", BODY, NOW) + ",v2=future"
    assert parse_signature_header(header)[0] == NOW
    verify(header, BODY, ["k"], NOW)


def test_hubspot_v3() -> None:
    uri = hubspot_uri("https://nurture.example", "/events/hubspot", "workflow=new-lead")
    assert uri == "https://nurture.example/events/hubspot?workflow=new-lead"
    ts = str(NOW * 1000)
    good = hubspot_v3_signature("client-secret", "POST", uri, BODY, ts)
    verify_hubspot_v3(
        good, ts, method="POST", uri=uri, body=BODY, client_secret="client-secret", now=NOW
    )
    with pytest.raises(SignatureError):
        verify_hubspot_v3(
            good,
            ts,
            method="POST",
            uri=uri,
            body=BODY + b" ",
            client_secret="client-secret",
            now=NOW,
        )
    with pytest.raises(SignatureError):
        verify_hubspot_v3(
            good,
            ts,
            method="POST",
            uri=uri,
            body=BODY,
            client_secret="client-secret",
            now=NOW + 301,
        )


def test_basic_auth() -> None:
    token = "Basic " + base64.b64encode(b"pipedrive:pw").decode()
    verify_basic_auth(token, "pipedrive:pw")
    assert _code(lambda: verify_basic_auth(token, "pipedrive:other")) == "signature_mismatch"
    assert _code(lambda: verify_basic_auth(None, "pipedrive:pw")) == "signature_missing"
    assert _code(lambda: verify_basic_auth("Basic !!!", "pipedrive:pw")) == "signature_malformed"


def test_sendgrid_ecdsa(sendgrid_signer: SendgridSigner) -> None:
    key = load_sendgrid_key(sendgrid_signer.public_key)
    headers = sendgrid_signer.headers(BODY, "1700000000")
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    verify_sendgrid(key, signature, "1700000000", BODY)
    assert _code(lambda: verify_sendgrid(key, signature, "1700000001", BODY)) == (
        "signature_mismatch"
    )
    assert _code(lambda: verify_sendgrid(key, signature, "1700000000", BODY + b" ")) == (
        "signature_mismatch"
    )
    assert _code(lambda: verify_sendgrid(key, "not base64!", "1700000000", BODY)) == (
        "signature_mismatch"
    )
    assert _code(lambda: verify_sendgrid(key, None, None, BODY)) == "signature_missing"
    with pytest.raises(ValueError):
        load_sendgrid_key("not a key")


def test_sendgrid_key_from_sendgrids_own_docs() -> None:
    # SendGrid's published test vector (their SDKs' tests).
    key = load_sendgrid_key(
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBc"
        "epxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
    )
    payload = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
    verify_sendgrid(
        key,
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=",
        "1588788367",
        payload,
    )


# -- through the live server -------------------------------------------------------------


def _post(live: LiveServer, body: bytes, header: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Nurture-Signature"] = header
    return live.client.post("/events", content=body, headers=headers).status_code


def _now(rt: Runtime) -> int:
    return int(rt.clock.now().timestamp())


def test_live_signature_cases(live: LiveServer, harness: Harness) -> None:
    rt = harness.rt
    t = _now(rt)
    assert _post(live, BODY, None) == 401
    assert _post(live, BODY, sign("test-secret", BODY, t - 301)) == 401
    assert _post(live, BODY, sign("wrong", BODY, t)) == 401
    assert _post(live, BODY.replace(b"l1", b"l2"), sign("test-secret", BODY, t)) == 401
    assert queued_events(rt) == 0
    assert _post(live, BODY, sign("test-secret", BODY, t)) == 202
    assert queued_events(rt) == 1


def test_live_rotated_secret(
    make_harness: Callable[..., Harness], serve: Callable[[Runtime], LiveServer]
) -> None:
    harness = make_harness(webhook_secrets=["old-secret", "new-secret"])
    live = serve(harness.rt)
    t = _now(harness.rt)
    body_old = json.dumps({**json.loads(BODY), "id": "r1"}).encode()
    body_new = json.dumps({**json.loads(BODY), "id": "r2"}).encode()
    assert _post(live, body_old, sign("old-secret", body_old, t)) == 202
    assert _post(live, body_new, sign(["retired", "new-secret"], body_new, t)) == 202
    assert _post(live, body_new, sign("retired", body_new, t)) == 401


def test_live_without_secrets_refuses_all(
    make_harness: Callable[..., Harness], serve: Callable[[Runtime], LiveServer]
) -> None:
    harness = make_harness(webhook_secrets=[])
    live = serve(harness.rt)
    response = live.client.post(
        "/events",
        content=BODY,
        headers={
            "Content-Type": "application/json",
            "X-Nurture-Signature": sign("test-secret", BODY, _now(harness.rt)),
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "no_secrets"
    assert "NURTURE_WEBHOOK_SECRETS" in response.json()["message"]
