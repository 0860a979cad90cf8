"""The SendGrid stand-in itself: validation, keep-alive, faults, control, standalone."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sendgrid_standin import Reply, SendGridStandIn, validate_payload

ROOT = Path(__file__).resolve().parents[2]


def valid_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "ann@example.com", "name": "Ann"}]}],
        "from": {"email": "hello@nurture.example", "name": "Nurture"},
        "subject": "Hello",
        "content": [
            {"type": "text/plain", "value": "Hi"},
            {"type": "text/html", "value": "<p>Hi</p>"},
        ],
        "headers": {"List-Unsubscribe": "<https://x.example/u>"},
        "custom_args": {"lead_id": "1", "sequence": "s", "step": "t"},
        "categories": ["s"],
    }
    payload.update(overrides)
    return payload


class Client:
    """A keep-alive HTTP client for the stand-in."""

    def __init__(self, port: int, key: str = "SG.standin-test-key") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.key = key

    def send(self, payload: object, **headers: str) -> tuple[int, dict[str, str], Any]:
        all_headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        all_headers.update(headers)
        return self.request("POST", "/v3/mail/send", json.dumps(payload), all_headers)

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as server:
        yield server


def fields(errors: list[dict[str, Any]]) -> list[str | None]:
    return [e["field"] for e in errors]


# ----------------------------------------------------------------------- validation


def test_valid_payload_passes() -> None:
    assert validate_payload(valid_payload()) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"personalizations": []}, "personalizations"),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        ({"personalizations": [{"to": [{"email": "nope"}]}]}, "personalizations.0.to.0.email"),
        ({"from": {"email": "nope"}}, "from.email"),
        ({"subject": ""}, "subject"),
        ({"content": [{"type": "text/plain", "value": ""}]}, "content.0.value"),
        (
            {
                "content": [
                    {"type": "text/html", "value": "<p>x</p>"},
                    {"type": "text/plain", "value": "x"},
                ]
            },
            "content",
        ),
        ({"custom_args": "lead"}, "custom_args"),
        ({"custom_args": {"lead_id": 1}}, "custom_args.lead_id"),
        ({"headers": {"Subject": "x"}}, "headers.Subject"),
        ({"categories": [str(i) for i in range(11)]}, "categories"),
    ],
)
def test_invalid_payloads_get_sendgrids_error_format(overrides: dict[str, Any], field: str) -> None:
    errors = validate_payload(valid_payload(**overrides))
    assert field in fields(errors)
    for error in errors:
        assert set(error) == {"message", "field", "help"}
        assert error["message"]


def test_missing_from_and_content() -> None:
    payload = valid_payload()
    del payload["from"], payload["content"]
    assert {"from", "content"} <= set(fields(validate_payload(payload)))


def test_http_answers_like_sendgrid(standin: SendGridStandIn) -> None:
    client = Client(standin.port)
    status, headers, body = client.send(valid_payload())
    assert status == 202 and body is None
    assert len(headers["X-Message-Id"]) == 22
    assert standin.messages[0].message_id == headers["X-Message-Id"]

    status, _, body = client.send(valid_payload(subject=None))
    assert status == 400
    assert body["errors"][0]["field"] == "subject"

    status, _, body = Client(standin.port, key="SG.wrong").send(valid_payload())
    assert status == 401
    assert body == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    status, _, _ = client.request("POST", "/v3/mail/send", "{not json", {"Authorization": ""})
    assert status == 401
    status, _, body = client.request(
        "POST",
        "/v3/mail/send",
        "{not json",
        {"Authorization": f"Bearer {standin.api_key}", "Content-Type": "application/json"},
    )
    assert status == 400 and body["errors"][0]["message"] == "Bad Request"
    assert client.request("GET", "/v3/mail/send")[0] == 405
    assert client.request("POST", "/v3/other", "{}")[0] == 404
    assert standin.requests == 7
    assert standin.accepted == 1


def test_keep_alive_reuses_one_connection(standin: SendGridStandIn) -> None:
    client = Client(standin.port)
    client.send(valid_payload())
    sock = client.conn.sock
    for _ in range(5):
        assert client.send(valid_payload())[0] == 202
        assert client.conn.sock is sock
    assert standin.accepted == 6


def test_stop_cuts_open_keep_alive_connections_quickly() -> None:
    standin = SendGridStandIn().start()
    client = Client(standin.port)
    client.send(valid_payload())
    started = time.monotonic()
    standin.stop()
    standin.stop()  # idempotent
    assert time.monotonic() - started < 2
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        client.send(valid_payload())


# --------------------------------------------------------------------------- faults


def test_script_runs_in_order_then_answers_normally(standin: SendGridStandIn) -> None:
    client = Client(standin.port)
    standin.script([429, Reply(status=503, headers={"Retry-After": "3"}), 202, "400"])
    status, headers, body = client.send(valid_payload())
    assert status == 429
    assert body == {"errors": [{"message": "too many requests", "field": None, "help": None}]}
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Reset"]) >= int(time.time())
    status, headers, _ = client.send(valid_payload())
    assert (status, headers["Retry-After"]) == (503, "3")
    assert client.send(valid_payload())[0] == 202
    assert client.send(valid_payload())[0] == 400
    assert client.send(valid_payload())[0] == 202
    assert (standin.requests, standin.accepted) == (5, 2)


def test_drop_closes_without_answer(standin: SendGridStandIn) -> None:
    standin.script(["drop"])
    with pytest.raises(http.client.RemoteDisconnected):
        Client(standin.port).send(valid_payload())
    assert standin.accepted == 0


def test_random_faults_follow_the_rate_and_the_seed() -> None:
    def run(seed: int) -> list[int]:
        with SendGridStandIn() as standin:
            standin.faults(rate=0.5, kinds=("500", "429"), seed=seed)
            client = Client(standin.port)
            return [client.send(valid_payload())[0] for _ in range(200)]

    first = run(7)
    assert first == run(7)
    failures = sum(status != 202 for status in first)
    assert 60 < failures < 140
    assert {500, 429, 202} == set(first)


def test_faults_reject_unknown_kinds(standin: SendGridStandIn) -> None:
    with pytest.raises(ValueError, match="unknown stand-in reply"):
        standin.faults(rate=0.1, kinds=("explode",))
    with pytest.raises(ValueError):
        standin.faults(rate=1.5)


def test_wait_for_times_out_naming_the_count(standin: SendGridStandIn) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        standin.wait_for(1, timeout=0.05)


def test_record_off_still_counts() -> None:
    with SendGridStandIn(record=False) as standin:
        Client(standin.port).send(valid_payload())
        assert standin.accepted == 1
        assert standin.messages == []


def test_cpu_time_grows_with_work(standin: SendGridStandIn) -> None:
    before = standin.cpu_time()
    client = Client(standin.port)
    for _ in range(200):
        client.send(valid_payload())
    spent = standin.cpu_time() - before
    assert 0 < spent < 5


# -------------------------------------------------------------- control endpoints


def test_control_endpoints(standin: SendGridStandIn) -> None:
    client = Client(standin.port)
    client.send(valid_payload())
    status, _, stats = client.request("GET", "/_standin/stats")
    assert status == 200
    assert stats["requests"] == 1 and stats["accepted"] == 1 and stats["cpu_seconds"] > 0
    assert client.request("POST", "/_standin/script", json.dumps([429]))[0] == 200
    assert client.send(valid_payload())[0] == 429
    assert (
        client.request("POST", "/_standin/faults", json.dumps({"rate": 1, "kinds": ["500"]}))[0]
        == 200
    )
    assert client.send(valid_payload())[0] == 500
    client.request("POST", "/_standin/faults", json.dumps({"rate": 0}))
    client.send(valid_payload(subject="second"))
    _, _, messages = client.request("GET", "/_standin/messages?since=1")
    assert [m["payload"]["subject"] for m in messages] == ["second"]
    assert client.request("POST", "/_standin/faults", json.dumps({"rate": "x"}))[0] == 400
    client.request("POST", "/_standin/reset")
    assert (standin.requests, standin.accepted, standin.messages) == (0, 0, [])


def test_runs_standalone_and_prints_its_port() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.sendgrid_standin", "--port", "0", "--key", "SG.k"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        client = Client(port, key="SG.k")
        assert client.send(valid_payload())[0] == 202
        assert client.request("GET", "/_standin/stats")[2]["accepted"] == 1
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert '"accepted": 1' in err
