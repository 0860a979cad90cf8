"""What the routes use, as FastAPI dependencies.

:func:`worker.http.app.create_app` builds these once per app and keeps them on
``app.state``; a route names what it needs in its signature (``runtime: RuntimeDep``)
and FastAPI hands it over. The dependencies are ``async`` so that reading them costs no
trip through the threadpool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, Request

from worker.http.metrics import HttpMetrics
from worker.runtime import Runtime
from worker.settings import Settings


@dataclass(frozen=True)
class HttpState:
    """Everything the routes share, built once by ``create_app``.

    Attributes:
        runtime: The process's runtime (settings, store, clock, queues).
        metrics: The app's own Prometheus registry.
        sendgrid_key: The SendGrid Event Webhook verification key; None refuses the
            webhook (NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY unset).
    """

    runtime: Runtime
    metrics: HttpMetrics
    sendgrid_key: ec.EllipticCurvePublicKey | None


async def http_state(request: Request) -> HttpState:
    """The app's :class:`HttpState`."""
    state: HttpState = request.app.state.http
    return state


async def runtime(request: Request) -> Runtime:
    """The app's runtime."""
    return (await http_state(request)).runtime


async def metrics(request: Request) -> HttpMetrics:
    """The app's metrics."""
    return (await http_state(request)).metrics


def webhook_secrets(settings: Settings) -> list[str]:
    """The secrets our ``X-Nurture-Signature`` may be made with (several during rotation)."""
    return [secret.get_secret_value() for secret in settings.webhook_secrets]


def unix_now(runtime: Runtime) -> float:
    """The runtime's clock as Unix seconds (signature timestamps are checked against it)."""
    return runtime.clock.now().timestamp()


StateDep = Annotated[HttpState, Depends(http_state)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
MetricsDep = Annotated[HttpMetrics, Depends(metrics)]
