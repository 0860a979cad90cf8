"""The ASGI app of ``nurture serve`` (FastAPI, served by uvicorn).

Routes (see docs/http.md), one router per concern in ``worker/http/routes/``:
``POST /events`` and the CRM adapters ``POST /events/hubspot`` / ``POST
/events/pipedrive``; ``POST /webhooks/sendgrid``; ``GET`` and ``POST
/unsubscribe/{token}``; ``/healthz``, ``/readyz``, ``/metrics``; the OpenAPI document
at ``/openapi.json``.

The process only validates and queues: every Redis call runs in the threadpool, so a
slow Redis never blocks the event loop, and no email is sent from here. Where things
are: bodies are read and decoded in ``body.py``, every error answer is shaped in
``errors.py``, the OpenAPI schemas are in ``schemas.py``, request ids and the access
log in ``context.py``, and what routes share in ``deps.py``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from worker.errors import SettingsError
from worker.http.context import RequestContext, install_record_factory
from worker.http.deps import HttpState
from worker.http.errors import install_error_handlers
from worker.http.metrics import HttpMetrics
from worker.http.routes import crm, events, ops, sendgrid, unsubscribe
from worker.http.schemas import install_openapi
from worker.http.signatures import SIGNATURE_HEADER, load_sendgrid_key
from worker.runtime import Runtime
from worker.settings import Settings

DESCRIPTION = (
    "CRM lead events in, SendGrid feedback, one-click unsubscribe. Event routes "
    f"need the `{SIGNATURE_HEADER}` header: `t=<unix>,v1=<hex HMAC-SHA256 of "
    '"<t>.<raw body>">`. See docs/http.md.'
)


def create_app(runtime: Runtime) -> FastAPI:
    """Build the HTTP service around a runtime (the CLI's ``nurture serve`` serves it).

    Raises:
        SettingsError: When NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY is set but not a key.
    """
    settings = runtime.settings
    sendgrid_key = _sendgrid_key(settings)
    metrics = HttpMetrics(runtime)
    install_record_factory()
    app = FastAPI(
        title="nurture-worker",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.http = HttpState(
        runtime=runtime,
        metrics=metrics,
        sendgrid_key=sendgrid_key,
    )
    app.add_middleware(RequestContext, metrics=metrics)
    install_error_handlers(app)
    for module in (events, crm, sendgrid, unsubscribe, ops):
        app.include_router(module.router)
    install_openapi(app)
    return app


def _sendgrid_key(settings: Settings) -> ec.EllipticCurvePublicKey | None:
    """The SendGrid webhook's verification key; None when it is not configured.

    Raises:
        SettingsError: When the setting is not a key.
    """
    if not settings.sendgrid_webhook_public_key:
        return None
    try:
        return load_sendgrid_key(settings.sendgrid_webhook_public_key)
    except ValueError as exc:
        raise SettingsError(f"NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY {exc}") from None


__all__ = ["create_app"]
