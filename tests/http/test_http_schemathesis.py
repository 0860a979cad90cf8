"""Fuzz the published OpenAPI document with schemathesis against a real uvicorn.

Requests to signed routes are signed after serialization (a ``requests`` auth hook), so
the fuzzer reaches the validation code and not only the 401. The bar: no 5xx, and every
answer has a documented status, content type and body shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import Harness
from tests.http.helpers import LiveServer, SendgridSigner
from worker.http.signatures import sign
from worker.runtime import Runtime

MAX_EXAMPLES = 50


class SignRequests(requests.auth.AuthBase):
    """Sign each prepared request the way the route expects, over the bytes sent."""

    def __init__(self, runtime: Runtime, sendgrid: SendgridSigner) -> None:
        self.runtime = runtime
        self.sendgrid = sendgrid

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        path = request.path_url
        if re.match(r"^/events(/|\?|$)", path):
            stamp = int(self.runtime.clock.now().timestamp())
            request.headers["X-Nurture-Signature"] = sign("test-secret", raw, stamp)
        elif path.startswith("/webhooks/sendgrid"):
            request.headers.update(
                {k: v for k, v in self.sendgrid.headers(raw).items() if k != "Content-Type"}
            )
        return request


@pytest.fixture
def fuzz_harness(
    make_harness: Callable[..., Harness], sendgrid_signer: SendgridSigner, crm_dir: Any
) -> Harness:
    return make_harness(sendgrid_webhook_public_key=sendgrid_signer.public_key, crm_dir=crm_dir)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_fuzzing_finds_no_server_errors(
    serve: Callable[[Runtime], LiveServer],
    fuzz_harness: Harness,
    sendgrid_signer: SendgridSigner,
    mode: GenerationMode,
) -> None:
    live = serve(fuzz_harness.rt)
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    auth = SignRequests(fuzz_harness.rt, sendgrid_signer)
    session = requests.Session()
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 9
    exercised = []
    try:
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case[Any]) -> None:
                response = case.call(session=session, auth=auth, timeout=30)
                case.validate_response(response, checks=checks)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # Nothing to negate (no parameters, no body: /healthz, /metrics...).
                assert mode is GenerationMode.NEGATIVE
                continue
            exercised.append(operation.label)
    finally:
        session.close()
    assert {"POST /events", "POST /webhooks/sendgrid", "POST /unsubscribe/{token}"} <= set(
        exercised
    )
