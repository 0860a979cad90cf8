"""``POST /events/hubspot`` and ``POST /events/pipedrive``: the CRMs' own webhooks, turned
into lead events through the mapping files ``crm/hubspot.yaml`` and ``crm/pipedrive.yaml``
(see :mod:`worker.http.adapters`).

A batch is accepted when at least one notification becomes a valid event; the ones that
cannot be read are kept as dead letters and listed in the answer, the ones no rule maps
are counted as ignored.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from worker.crm.mapping import Mapping
from worker.errors import ApiError, CatalogError, EventError, MappingError
from worker.events import Event, validate_event
from worker.http.adapters import (
    WORKFLOW_NAME,
    Notification,
    hubspot_notifications,
    pipedrive_notifications,
    translate,
)
from worker.http.body import decode_json, read_body, require_json
from worker.http.deps import HttpState, StateDep, unix_now, webhook_secrets
from worker.http.ingesting import ingest_and_accept
from worker.http.schemas import CRM_BODY, AdapterAccepted, Problem, error_responses
from worker.http.signatures import (
    HUBSPOT_SIGNATURE_HEADER,
    HUBSPOT_TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    WORKFLOW_KEY_HEADER,
    hubspot_uri,
    verify,
    verify_basic_auth,
    verify_hubspot_v3,
    verify_static_key,
)
from worker.runtime import Runtime

Crm = Literal["hubspot", "pipedrive"]

router = APIRouter(tags=["events"])


def verify_crm(request: Request, body: bytes, crm: Crm, runtime: Runtime) -> None:
    """Our signature always works; the CRM's own scheme when it is configured.

    Raises:
        SignatureError: When the request is not signed by a scheme we accept.
    """
    settings = runtime.settings
    headers = request.headers
    secrets = webhook_secrets(settings)
    if headers.get(SIGNATURE_HEADER):
        verify(headers[SIGNATURE_HEADER], body, secrets, unix_now(runtime))
    elif (
        crm == "hubspot"
        and settings.hubspot_client_secret
        and headers.get(HUBSPOT_SIGNATURE_HEADER)
    ):
        verify_hubspot_v3(
            headers.get(HUBSPOT_SIGNATURE_HEADER),
            headers.get(HUBSPOT_TIMESTAMP_HEADER),
            method=request.method,
            uri=hubspot_uri(settings.public_url, request.url.path, request.url.query),
            body=body,
            client_secret=settings.hubspot_client_secret.get_secret_value(),
            now=unix_now(runtime),
        )
    elif (
        crm == "hubspot"
        and settings.hubspot_workflow_key
        and request.query_params.get("workflow") is not None
        and headers.get(WORKFLOW_KEY_HEADER)
    ):
        # A workflow's "Send a webhook" with authentication "API key" (request header).
        verify_static_key(
            headers.get(WORKFLOW_KEY_HEADER), settings.hubspot_workflow_key.get_secret_value()
        )
    elif crm == "pipedrive" and settings.pipedrive_webhook_auth and headers.get("authorization"):
        verify_basic_auth(
            headers.get("authorization"), settings.pipedrive_webhook_auth.get_secret_value()
        )
    else:
        verify(None, body, secrets, unix_now(runtime))


def read_crm_body(
    crm: Crm, body: bytes, workflow: str | None, mapping: Mapping
) -> tuple[int, list[Event], list[tuple[int, str]]]:
    """Decode, translate and validate a CRM body (CPU work: runs in the threadpool).

    Returns:
        How many notifications were ignored, the good events, and (index, reason) of
        the notifications that could not be read, in batch order.

    Raises:
        BodyError: When the body is not JSON.
        PayloadError: When it is not the CRM's webhook shape.
        ApiError: 400 ``invalid_events`` when no notification became a valid event.
    """
    payload = decode_json(body)
    notes: list[Notification]
    if crm == "hubspot":
        notes = hubspot_notifications(payload, workflow, mapping)
    else:
        notes = pipedrive_notifications(payload)
    translation = translate(mapping, notes)
    good: list[Event] = []
    bad = list(translation.errors)
    for index, doc in translation.events:
        try:
            good.append(validate_event(doc, index))
        except EventError as exc:
            bad.append((index, exc.reason))
    bad.sort(key=lambda problem: problem[0])
    if bad and not good:
        raise ApiError(
            400,
            "invalid_events",
            f"no notification could be turned into a valid event (check crm/{crm}.yaml); "
            "nothing was queued",
            errors=bad,
        )
    return len(translation.ignored), good, bad


async def handle_crm(
    request: Request, state: HttpState, crm: Crm, workflow: str | None
) -> JSONResponse:
    """Both CRM routes: read, verify, map, keep; answer 202 with what became of each."""
    runtime, metrics = state.runtime, state.metrics
    with metrics.counting_refusals(crm):
        require_json(request)
        body = await read_body(request)
        verify_crm(request, body, crm, runtime)
        try:
            # The catalog (loaded on first use here) reloads edited mappings.
            mapping = await run_in_threadpool(runtime.catalog.mapping, crm)
        except (MappingError, CatalogError) as exc:
            raise ApiError(
                503,
                "adapter_not_configured",
                f"the {crm} adapter has no valid mapping: {exc}",
                headers={"Retry-After": "60"},
            ) from None
        if workflow is not None and not WORKFLOW_NAME.match(workflow):
            raise ApiError(400, "bad_workflow", "workflow must be letters, digits, - or _ (max 64)")
        ignored, good, bad = await run_in_threadpool(read_crm_body, crm, body, workflow, mapping)
        accepted = await ingest_and_accept(
            runtime,
            metrics,
            crm,
            good,
            lambda result: AdapterAccepted(
                accepted=result.accepted,
                duplicates=result.duplicates,
                ignored=ignored,
                refused=[Problem(index=index, reason=reason) for index, reason in bad],
            ),
            dead_letters=[(f"crm:{crm}", f"notification {i}: {reason}") for i, reason in bad],
        )
    metrics.events_ignored.labels(crm).inc(ignored)
    if bad:
        metrics.events_refused.labels(crm, "invalid_notification").inc(len(bad))
    return accepted


@router.post(
    "/events/hubspot",
    status_code=202,
    response_model=AdapterAccepted,
    responses=error_responses(400, 401, 413, 415, 503),
    summary="HubSpot webhooks (Webhooks API batches or workflow webhooks), mapped "
    "through crm/hubspot.yaml",
    openapi_extra={"requestBody": CRM_BODY},
)
async def post_hubspot(
    request: Request,
    state: StateDep,
    workflow: str | None = None,
    # Declared for the OpenAPI document; verify_crm reads the signature headers itself.
    x_nurture_signature: str | None = Header(default=None, alias=SIGNATURE_HEADER),
) -> JSONResponse:
    return await handle_crm(request, state, "hubspot", workflow)


@router.post(
    "/events/pipedrive",
    status_code=202,
    response_model=AdapterAccepted,
    responses=error_responses(400, 401, 413, 415, 503),
    summary="Pipedrive webhooks (v2, or v1), mapped through crm/pipedrive.yaml",
    openapi_extra={"requestBody": CRM_BODY},
)
async def post_pipedrive(
    request: Request,
    state: StateDep,
    # Declared for the OpenAPI document; verify_crm reads the signature headers itself.
    x_nurture_signature: str | None = Header(default=None, alias=SIGNATURE_HEADER),
) -> JSONResponse:
    return await handle_crm(request, state, "pipedrive", None)
