"""The one body reader and JSON decoder (worker/http/body.py) and the error tree.

Every JSON route reads its body through the same reader and decoder, so the same bad
body gets the same status and ``error`` code on each of them, counted under the route's
source in ``/metrics``. The decoder's errors carry their status themselves (BodyError),
so no route maps texts back to codes.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Harness
from tests.http.helpers import LiveServer, SendgridSigner, queued_events, signed_headers
from worker import errors
from worker.errors import ApiError, BodyError, NurtureError, PayloadError, SignatureError
from worker.events import UndecodableLine
from worker.http.body import MAX_BODY, MAX_DEPTH, decode_json
from worker.runtime import Runtime


def _code(body: bytes, *, json_lines: bool = False) -> tuple[int, str, str]:
    with pytest.raises(BodyError) as info:
        decode_json(body, json_lines=json_lines)
    return info.value.status, info.value.code, info.value.message


# -- the decoder on its own --------------------------------------------------------------


@pytest.mark.parametrize("json_lines", [False, True])
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"id": "\xff"}', "invalid_utf8"),
        (b"", "empty_body"),
        (b" \r\n\t", "empty_body"),
        (b"\xef\xbb\xbf", "empty_body"),  # a byte order mark alone is still empty
        (b"{not json", "invalid_json"),
        (b'{"n": ' + b"1" * 5000 + b"}", "invalid_json"),  # past CPython's digit limit
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep"),
        (b"[" * 200_000, "too_deep"),  # json's own RecursionError
    ],
)
def test_each_bad_body_gets_its_code_and_a_400(body: bytes, code: str, json_lines: bool) -> None:
    status, got, message = _code(body, json_lines=json_lines)
    assert (status, got) == (400, code)
    assert message


def test_limits_and_messages() -> None:
    assert decode_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) == _nested(MAX_DEPTH)
    assert decode_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert _code(b'{"id": "\xff"}')[2] == "body is not valid UTF-8 (byte 8)"
    assert _code(b"")[2] == "body is empty; send JSON"
    assert _code(b"", json_lines=True)[2] == (
        "body is empty; send a JSON object, an array or JSON Lines"
    )
    assert _code(b"{not json")[2] == (
        "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"
    )


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_json_lines_name_every_bad_line() -> None:
    assert decode_json(b'{"a": 1}', json_lines=True) == [{"a": 1}]
    assert decode_json(b'[{"a": 1}, 2]', json_lines=True) == [{"a": 1}, 2]
    items = decode_json(b'\n{"a": 1}\n\n{bad}\n[1]\n{worse}\n', json_lines=True)
    assert items[0] == {"a": 1} and items[2] == [1]
    assert isinstance(items[1], UndecodableLine) and items[1].reason.startswith(
        "line 3 is not valid JSON"
    )
    assert isinstance(items[3], UndecodableLine) and items[3].reason.startswith("line 5 ")
    # A single line that is not JSON is bad JSON, not a batch of one bad line.
    assert _code(b"{bad}", json_lines=True)[1] == "invalid_json"
    # Without json_lines, several documents are not JSON.
    assert _code(b'{"a": 1}\n{"b": 2}')[1] == "invalid_json"
    # One line too deep refuses the whole body, as a deep single document does.
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert _code(b'{"a": 1}\n' + deep, json_lines=True)[1] == "too_deep"


# -- the error tree ----------------------------------------------------------------------


def test_every_error_is_a_nurture_error_with_a_raised_when_docstring() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    assert {c.__name__ for c in classes} >= {
        "SignatureError",
        "MappingError",
        "PayloadError",
        "PoisonEvent",
        "ContentCallError",
        "ApiError",
        "BodyError",
    }
    for cls in classes:
        assert issubclass(cls, NurtureError), cls
        if cls is not NurtureError:
            assert (cls.__doc__ or "").startswith("Raised when"), cls


def test_api_errors_carry_their_answer() -> None:
    signature = SignatureError("signature_expired", "t is 301 s old")
    assert (signature.status, signature.code, signature.message) == (
        401,
        "signature_expired",
        "t is 301 s old",
    )
    assert signature.headers == {"WWW-Authenticate": "Signature"}
    payload = PayloadError("item 0: expected a JSON object, got int")
    assert (payload.status, payload.code, str(payload)) == (
        400,
        "invalid_payload",
        "item 0: expected a JSON object, got int",
    )
    assert isinstance(payload, ApiError) and isinstance(BodyError(415, "x", "y"), ApiError)


# -- the same codes on every JSON route, through a real uvicorn ---------------------------


@pytest.fixture
def body_harness(
    make_harness: Callable[..., Harness], sendgrid_signer: SendgridSigner, crm_dir: Path
) -> Harness:
    return make_harness(sendgrid_webhook_public_key=sendgrid_signer.public_key, crm_dir=crm_dir)


@pytest.fixture
def body_live(serve: Callable[[Runtime], LiveServer], body_harness: Harness) -> LiveServer:
    return serve(body_harness.rt)


ROUTES = {
    "/events": "native",
    "/events/hubspot": "hubspot",
    "/events/pipedrive": "pipedrive",
    "/webhooks/sendgrid": "sendgrid",
}
BAD_BODIES: list[tuple[bytes, int, str]] = [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "empty_body"),
    (b'{"id": "\xff\xfe"}', 400, "invalid_utf8"),
    (b"[" * 40 + b"]" * 40, 400, "too_deep"),
    (b"[" * 200_000, 400, "too_deep"),
    (b"[" + b"1" * 5000 + b"]", 400, "invalid_json"),
]


def _headers(
    rt: Runtime, signer: SendgridSigner, path: str, body: bytes, content_type: str
) -> dict[str, str]:
    if path == "/webhooks/sendgrid":
        headers = signer.headers(body)
        headers["Content-Type"] = content_type
        return headers
    return signed_headers(rt, body, content_type=content_type)


def test_every_json_route_answers_the_same_code_for_the_same_body(
    body_live: LiveServer, body_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    rt = body_harness.rt
    for path in ROUTES:
        for body, status, code in BAD_BODIES:
            headers = _headers(rt, sendgrid_signer, path, body, "application/json")
            response = body_live.client.post(path, content=body, headers=headers)
            assert response.status_code == status, (path, body[:20], response.text)
            assert response.headers["content-type"] == "application/json"
            answer = response.json()
            assert answer["error"] == code, (path, answer)
            assert answer["message"] and set(answer) == {"error", "message"}
        body = json.dumps([]).encode()
        headers = _headers(rt, sendgrid_signer, path, body, "text/plain")
        response = body_live.client.post(path, content=body, headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert response.json()["error"] == "unsupported_media_type"
    metrics = body_live.client.get("/metrics").text
    for source in ROUTES.values():
        for code, times in (("invalid_json", 2), ("too_deep", 2), ("unsupported_media_type", 1)):
            line = f'nurture_events_refused_total{{reason="{code}",source="{source}"}} {times}.0'
            assert line in metrics, line
    assert queued_events(rt) == 0
    assert body_harness.dead_letters() == []


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b" " * min(65536, total - sent)
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize("path", [*ROUTES, "/unsubscribe/any-token"])
def test_every_body_is_capped_while_it_streams(
    body_live: LiveServer, body_harness: Harness, sendgrid_signer: SendgridSigner, path: str
) -> None:
    limit = 4096 if path.startswith("/unsubscribe") else MAX_BODY
    headers = _headers(body_harness.rt, sendgrid_signer, path, b"", "application/json")
    # Declared too large: refused before reading.
    response = body_live.client.post(path, content=b" " * (limit + 1), headers=headers)
    assert response.status_code == 413, response.text
    assert response.json() == {
        "error": "payload_too_large",
        "message": f"body over {limit} bytes; send smaller batches",
    }
    # Chunked (no Content-Length): counted while it streams.
    response = body_live.client.post(path, content=_chunks(limit + 1), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert queued_events(body_harness.rt) == 0


def test_a_refused_signature_is_shaped_like_every_other_error(
    body_live: LiveServer, body_harness: Harness
) -> None:
    for path in ROUTES:
        response = body_live.client.post(
            path, content=b"[]", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Signature"
        answer = response.json()
        assert answer["error"] == "signature_missing" and set(answer) == {"error", "message"}
    assert queued_events(body_harness.rt) == 0
