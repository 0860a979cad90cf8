"""The OpenAPI side of the HTTP service: response models, request-body schemas and the
patch that adds the schemas FastAPI cannot see (bodies are read by hand, see
``worker/http/body.py``).

The document is published at ``/openapi.json``; ``tests/http/test_http_schemathesis.py``
fuzzes the service against it, so every status, content type and body shape a route
can answer with must be declared here.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from worker.events import Event

# -- response models (they make the OpenAPI document exact) ---------------------------


class Problem(BaseModel):
    """One bad event in a batch."""

    index: int = Field(description="0-based position in the batch (line for JSON Lines)")
    reason: str = Field(description="which field is wrong and why")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="machine-readable code, e.g. signature_expired")
    message: str = Field(description="what is wrong and how to fix it")
    errors: list[Problem] | None = Field(
        default=None, description="each bad event (error invalid_events only)"
    )


class Accepted(BaseModel):
    """202: the events are durably queued."""

    accepted: int = Field(description="events queued now")
    duplicates: int = Field(description="events already received earlier (same id)")


class AdapterAccepted(Accepted):
    """202 from a CRM adapter."""

    ignored: int = Field(description="CRM notifications no mapping rule turns into an event")
    refused: list[Problem] = Field(
        default_factory=list,
        description="notifications that could not be read (kept as dead letters)",
    )


class SendgridAccepted(BaseModel):
    """200: the batch is handled."""

    processed: int
    duplicates: int
    ignored: int
    invalid: int


class Status(BaseModel):
    """Health answers."""

    status: str
    message: str | None = None


class UnsubscribeResult(BaseModel):
    """JSON answer of the unsubscribe routes (when the client asks for JSON)."""

    status: Literal["unsubscribed", "subscribed"]
    lead_known: bool


# -- error responses -----------------------------------------------------------------

_ERROR_TEXT = {
    400: "bad body or bad events; nothing was queued",
    401: "signature missing, malformed, expired or wrong",
    404: "unknown or forged token",
    413: "body over the size limit",
    415: "wrong content type",
    503: "Redis unreachable: retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a JSON route refusing with these status codes."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


def _html_or_json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
        },
    }


#: GET /unsubscribe/{token}: a page for browsers, JSON for scripts.
UNSUBSCRIBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _html_or_json(
        "the page (text/html) or, with Accept: application/json, JSON", "UnsubscribeResult"
    ),
    404: _html_or_json("forged, altered or truncated token: nothing changed", "ErrorBody"),
    503: _html_or_json("Redis unreachable", "ErrorBody"),
}

#: POST /unsubscribe/{token}: as GET, plus the body's refusals. Their content is given
#: explicitly: the route's default (text/html) would be assumed otherwise.
POST_UNSUBSCRIBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **UNSUBSCRIBE_RESPONSES,
    **{
        code: {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for code in (400, 413)
    },
}

# -- request bodies ------------------------------------------------------------------

EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {
                        "type": "array",
                        "maxItems": 10_000,
                        "items": {"$ref": "#/components/schemas/Event"},
                    },
                ]
            }
        }
    },
}

#: A CRM's own payload: its shape is the CRM's, read through the mapping.
CRM_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"type": "object"},
                    {"type": "array", "items": {"type": "object"}},
                ]
            }
        }
    },
}

SENDGRID_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/SendgridEvent"},
            }
        }
    },
}

UNSUBSCRIBE_BODY: dict[str, Any] = {
    "required": False,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                "additionalProperties": False,
            }
        }
    },
}

#: The fields of a SendGrid Event Webhook event that the service reads.
SENDGRID_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "sg_event_id"],
    "properties": {
        "event": {"type": "string"},
        "email": {"type": "string"},
        "sg_event_id": {"type": "string"},
        "timestamp": {"type": "integer"},
        "type": {"type": "string"},
        "lead_id": {"type": "string"},
        "sequence": {"type": "string"},
        "step": {"type": "string"},
    },
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app`` publish the schemas its hand-read request bodies refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(event_schema.pop("$defs", {}))
        components["Event"] = event_schema
        components["UnsubscribeResult"] = UnsubscribeResult.model_json_schema()
        components.setdefault(
            "ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        components.setdefault("Problem", Problem.model_json_schema())
        components["SendgridEvent"] = SENDGRID_EVENT
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
