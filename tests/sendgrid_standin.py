"""A local stand-in for SendGrid's v3 Mail Send API, with fault injection.

A real HTTP/1.1 server (keep-alive) on 127.0.0.1 that answers ``POST /v3/mail/send``
the way SendGrid does: ``Authorization: Bearer <key>`` is checked (401), the JSON body
is validated (400 with SendGrid's ``{"errors": [{"message", "field", "help"}]}``), and a
valid message is recorded and answered ``202`` with an ``X-Message-Id``.

In tests::

    from tests.sendgrid_standin import SendGridStandIn

    with SendGridStandIn() as sg:
        settings = Settings(delivery="sendgrid", sendgrid_api_key=sg.api_key,
                            sendgrid_host=sg.url)
        ...
        sg.wait_for(1)                     # block until one message was accepted
        assert sg.messages[0].custom_args["lead_id"] == "crm-1042"
        sg.script([429, 202])              # next answers: a 429, then normal
        sg.faults(rate=0.3, kinds=("429", "500", "slow", "drop"), seed=7)
        sg.latency(0.15)                   # every mail send answers after 150 ms
        sg.latency(0.15, p95=0.4, seed=1)  # lognormal: median 150 ms, p95 400 ms
        sg.rate_limit(600, period=60)      # X-RateLimit-* on every answer, 429 beyond
        sg.account_fault("revoked", 25)    # 401 (key revoked) for 25 s, then normal

As a pytest fixture (in a conftest)::

    @pytest.fixture
    def sendgrid():
        with SendGridStandIn() as sg:
            yield sg

Standalone (benchmarks; prints the port alone on the first stdout line)::

    python -m tests.sendgrid_standin --port 0 [--key K] [--no-record]
        [--faults-rate 0.1 --faults-kinds 429,500,slow,drop --seed 1]
        [--latency 0.15 [--latency-p95 0.4]] [--rate-limit 600 --rate-period 60]

Control endpoints for a stand-in in another process (no authorization):
``GET /_standin/stats``, ``GET /_standin/messages?since=N``, ``POST /_standin/reset``,
``POST /_standin/script`` (JSON list, as :meth:`SendGridStandIn.script`),
``POST /_standin/faults`` (JSON object, as :meth:`SendGridStandIn.faults`),
``POST /_standin/latency`` (JSON object, as :meth:`SendGridStandIn.latency`),
``POST /_standin/rate_limit`` (JSON object, as :meth:`SendGridStandIn.rate_limit`),
``POST /_standin/account_fault`` (JSON object, as :meth:`SendGridStandIn.account_fault`),
``GET /_standin/receipts?since=N`` (``[lead_id, received_at]`` pairs, kept even when
recording is off) and ``POST /_standin/record`` (``{"messages": false}`` keeps only
receipts, for long benchmarks).

Latency: a real account answers a mail send in roughly 100-300 ms. ``latency(median)``
delays every mail-send answer by that many seconds; with ``p95`` the delay is drawn
from a lognormal distribution with that median and 95th percentile (the long right
tail real APIs show). Each connection has its own server thread, so delays overlap
across connections exactly as they do at SendGrid.

Rate limits, as SendGrid documents them
(https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits):
every answer carries ``X-RateLimit-Limit`` (requests allowed per refresh period),
``X-RateLimit-Remaining`` (left in this period) and ``X-RateLimit-Reset`` (unix time in
seconds when the period ends); a request beyond the limit gets ``429 TOO MANY
REQUESTS`` with ``{"errors": [{"field": null, "message": "too many requests"}]}`` and
the message is not accepted. ``rate_limit(limit, period)`` turns that on (fixed
windows aligned to multiples of ``period`` in unix time).

Fault kinds: ``"429"`` (with ``X-RateLimit-*`` headers), any other status code such as
``"500"``/``"503"``/``"400"``/``"401"``, ``"slow"`` (sleep ``slow_delay`` then answer
normally: the message *is* accepted), ``"drop"`` (read the request, close the
connection without answering, message *not* accepted) and ``"lost"`` (accept and record
the message, then close without answering: the reply is lost).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import queue
import random
import re
import resource
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, parse_qsl

__all__ = [
    "FAULT_KINDS",
    "Latency",
    "RateLimitWindow",
    "Received",
    "Reply",
    "SendGridStandIn",
    "validate_payload",
]

MAIL_SEND_PATH = "/v3/mail/send"
SCOPES_PATH = "/v3/scopes"
VERIFIED_SENDERS_PATH = "/v3/verified_senders"
DOMAINS_PATH = "/v3/whitelabel/domains"
#: Account faults as SendGrid documents them: status and ``errors[0].message``
#: (https://support.sendgrid.com/hc/en-us/articles/18322114821403-4XX-API-Errors-and-Troubleshooting-Suggestions,
#: https://twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors,
#: https://www.twilio.com/docs/api/errors/60604, https://twilio.com/docs/api/errors/60222).
ACCOUNT_FAULTS: dict[str, tuple[int, str]] = {
    "revoked": (401, "The provided authorization grant is invalid, expired, or revoked"),
    "credits": (401, "Maximum credits exceeded"),
    "not_authorized": (401, "Authenticated user is not authorized to send mail"),
    "forbidden": (403, "access forbidden"),
    "sender": (
        403,
        "The from address does not match a verified Sender Identity. Mail cannot be sent "
        "until this error is resolved. Visit "
        "https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ "
        "to see the Sender Identity requirements",
    ),
}
#: What ``GET /v3/scopes`` lists for the stand-in's key (a real key lists many more).
_SCOPES = ["mail.send", "scopes.read"]
FAULT_KINDS = ("429", "500", "503", "slow", "drop", "lost")
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")
# Headers SendGrid refuses in the ``headers`` object (it sets them itself).
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)
_MAX_BODY = 30 * 1024 * 1024  # SendGrid's total message size limit
_MAX_HEADERS = 100
_IDLE_EXIT = 30.0  # seconds an idle pool thread waits for a connection before exiting
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_DEFAULT_ERRORS = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    404: "not found",
    405: "method not allowed",
    413: "The JSON payload you have included in your request is too large.",
    415: "Content-Type should be application/json.",
    429: "too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}
_UNVERIFIED_SENDER = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent "
    "until this error is resolved. Visit "
    "https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ "
    "to see the Sender Identity requirements"
)


@dataclass(frozen=True)
class Reply:
    """One scripted or injected answer.

    Attributes:
        status: Status to answer. A 2xx means "process the request normally" (auth,
            validation, record, 202), so ``script([429, 202])`` is one 429, then normal.
        errors: SendGrid ``errors`` list for an error status; a default otherwise.
        headers: Extra response headers.
        delay: Seconds to sleep before answering (``"slow"``).
        drop: Close the connection without answering.
        accept: With ``drop``: record the message first (``"lost"``: the reply is lost).
        reset_in: For 429: ``X-RateLimit-Reset`` is now + this many seconds; None sends
            no ``X-RateLimit-*`` headers (e.g. to test ``Retry-After`` alone).
    """

    status: int = 202
    errors: Sequence[Mapping[str, Any]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    accept: bool = False
    reset_in: float | None = 1.0

    @classmethod
    def of(cls, item: Reply | int | str | Mapping[str, Any], slow_delay: float = 2.0) -> Reply:
        """Build a reply from ``202``, ``"429"``, ``"slow"``, ``"drop"``, ``"lost"``,
        a dict of :class:`Reply` fields, or a :class:`Reply`."""
        if isinstance(item, Reply):
            return item
        if isinstance(item, Mapping):
            return cls(**dict(item))
        if isinstance(item, int):
            return cls(status=item)
        kind = str(item).strip().lower()
        if kind in ("ok", "accept", "normal"):
            return cls()
        if kind == "slow":
            return cls(delay=slow_delay)
        if kind == "drop":
            return cls(drop=True)
        if kind == "lost":
            return cls(drop=True, accept=True)
        if kind.isdigit():
            return cls(status=int(kind))
        raise ValueError(f"unknown stand-in reply {item!r}; use a status code, slow, drop or lost")


class Latency:
    """How long a mail send takes to be answered: fixed, or lognormal with a median and p95.

    A lognormal delay ``exp(N(mu, sigma))`` has median ``exp(mu)`` and 95th percentile
    ``exp(mu + 1.645 sigma)``, so both are set from the two figures an operator knows
    from an API dashboard.
    """

    _Z95 = 1.6448536269514722  # the standard normal's 95th percentile

    def __init__(self, median: float = 0.0, p95: float | None = None, seed: int | None = None):
        if median < 0 or (p95 is not None and p95 < median):
            raise ValueError("latency: need 0 <= median <= p95")
        self.median = float(median)
        self.p95 = None if p95 is None or p95 == median else float(p95)
        self._mu = math.log(median) if median > 0 else 0.0
        self._sigma = math.log(self.p95 / median) / self._Z95 if self.p95 and median else 0.0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> float:
        """Seconds to wait before answering the next request."""
        if self.median <= 0:
            return 0.0
        if not self._sigma:
            return self.median
        with self._lock:
            return self._rng.lognormvariate(self._mu, self._sigma)


class RateLimitWindow:
    """SendGrid's fixed-window request limit: ``limit`` requests per ``period`` seconds.

    Windows are aligned to multiples of ``period`` in unix time, so every request in a
    window reports the same ``X-RateLimit-Reset`` (whole unix seconds, as SendGrid sends).
    """

    def __init__(self, limit: int, period: float = 1.0) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("rate limit: need limit >= 1 and period > 0")
        self.limit = int(limit)
        self.period = float(period)
        self._window = -1
        self._used = 0
        self.refused = 0

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request (caller holds the stand-in's lock).

        Returns:
            Whether it is within the limit, and the ``X-RateLimit-*`` headers to answer.
        """
        window = int(now // self.period)
        if window != self._window:
            self._window, self._used = window, 0
        allowed = self._used < self.limit
        if allowed:
            self._used += 1
        else:
            self.refused += 1
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - self._used),
            "X-RateLimit-Reset": str(math.ceil((window + 1) * self.period)),
        }
        return allowed, headers


@dataclass(frozen=True)
class Received:
    """One message the stand-in accepted.

    Attributes:
        payload: The parsed JSON body, as sent.
        message_id: The ``X-Message-Id`` it was answered with.
        received_at: Unix time of acceptance.
        http_headers: The HTTP request headers (``Authorization`` included).
    """

    payload: dict[str, Any]
    message_id: str
    received_at: float
    http_headers: dict[str, str]

    @property
    def to(self) -> list[str]:
        """Every ``to`` address of every personalization."""
        return [
            str(r.get("email"))
            for p in self.payload.get("personalizations", [])
            for r in p.get("to", [])
        ]

    @property
    def subject(self) -> str:
        return str(self.payload.get("subject", ""))

    @property
    def custom_args(self) -> dict[str, str]:
        return dict(self.payload.get("custom_args") or {})

    @property
    def headers(self) -> dict[str, str]:
        """The email headers of the ``headers`` object (not the HTTP headers)."""
        return dict(self.payload.get("headers") or {})

    @property
    def reply_to(self) -> dict[str, str] | None:
        value = self.payload.get("reply_to")
        return dict(value) if isinstance(value, dict) else None

    @property
    def tracking_settings(self) -> dict[str, Any]:
        return dict(self.payload.get("tracking_settings") or {})

    @property
    def mail_settings(self) -> dict[str, Any]:
        return dict(self.payload.get("mail_settings") or {})

    @property
    def categories(self) -> list[str]:
        return list(self.payload.get("categories") or [])

    def content(self, content_type: str) -> str | None:
        """The value of the first content block of that MIME type, if any."""
        for block in self.payload.get("content") or []:
            if isinstance(block, dict) and block.get("type") == content_type:
                return str(block.get("value"))
        return None

    @property
    def text(self) -> str | None:
        return self.content("text/plain")

    @property
    def html(self) -> str | None:
        return self.content("text/html")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _err(message: str, field: str | None, anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP + anchor if anchor else None}


def _check_address(value: object, where: str, anchor: str, errors: list[dict[str, Any]]) -> None:
    if not isinstance(value, dict):
        errors.append(
            _err(f"Invalid type. Expected: object, given: {_json_type(value)}.", where, anchor)
        )
        return
    email = value.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email):
        errors.append(_err("Does not contain a valid address.", f"{where}.email", anchor))
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        errors.append(
            _err(f"Invalid type. Expected: string, given: {_json_type(name)}.", f"{where}.name")
        )


def _check_string_map(
    value: object, where: str, errors: list[dict[str, Any]], max_bytes: int | None = None
) -> None:
    if not isinstance(value, dict):
        errors.append(
            _err(f"Invalid type. Expected: object, given: {_json_type(value)}.", where, where)
        )
        return
    for key, item in value.items():
        if not isinstance(item, str):
            errors.append(
                _err(
                    f"Invalid type. Expected: string, given: {_json_type(item)}.",
                    f"{where}.{key}",
                    where,
                )
            )
    if max_bytes is not None and len(json.dumps(value).encode()) > max_bytes:
        errors.append(_err(f"The {where} object must be smaller than {max_bytes} bytes.", where))


def validate_payload(payload: object) -> list[dict[str, Any]]:
    """Check a v3 Mail Send body the way SendGrid does (the rules this project touches).

    Args:
        payload: The parsed JSON body.

    Returns:
        SendGrid-style error objects; empty when the payload is acceptable.
    """
    if not isinstance(payload, dict):
        return [_err("Bad Request", None)]
    errors: list[dict[str, Any]] = []
    has_template = isinstance(payload.get("template_id"), str)

    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _err(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > 1000:
        errors.append(
            _err(
                "The personalization block is limited to 1000 personalizations per API "
                f"request. You have provided {len(personalizations)} personalizations.",
                "personalizations",
                "personalizations",
            )
        )
    all_have_subject = bool(personalizations)
    for i, personalization in enumerate(personalizations):
        where = f"personalizations.{i}"
        if not isinstance(personalization, dict):
            errors.append(_err("Invalid type. Expected: object.", where, "personalizations"))
            all_have_subject = False
            continue
        recipients = personalization.get("to")
        if not isinstance(recipients, list) or not recipients:
            errors.append(
                _err(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"{where}.to",
                    "personalizations.to",
                )
            )
            recipients = []
        seen: set[str] = set()
        for j, recipient in enumerate(recipients):
            _check_address(recipient, f"{where}.to.{j}", "personalizations.to", errors)
            if isinstance(recipient, dict) and isinstance(recipient.get("email"), str):
                address = recipient["email"].lower()
                if address in seen:
                    errors.append(
                        _err(
                            "Each email address in the personalization block should be unique "
                            "between to, cc, and bcc. We found the first duplicate instance of "
                            f"[{recipient['email']}] in the {where}.to field.",
                            where,
                            "personalizations",
                        )
                    )
                seen.add(address)
        if not isinstance(personalization.get("subject"), str):
            all_have_subject = False
        for key in ("headers", "custom_args", "substitutions"):
            if key in personalization:
                _check_string_map(personalization[key], f"{where}.{key}", errors)

    if "from" not in payload:
        errors.append(
            _err(
                "The from object must be provided for every email send. It is an object that "
                "requires an email parameter, but may also contain a name parameter.",
                "from",
                "from",
            )
        )
    else:
        sender = payload["from"]
        if isinstance(sender, dict) and not (
            isinstance(sender.get("email"), str) and _EMAIL.match(sender["email"])
        ):
            errors.append(_err("The from email does not contain a valid address.", "from.email"))
        else:
            _check_address(sender, "from", "from", errors)

    if "reply_to" in payload:
        _check_address(payload["reply_to"], "reply_to", "reply_to", errors)
    for block, names in (
        ("tracking_settings", ("click_tracking", "open_tracking", "subscription_tracking")),
        ("mail_settings", ("sandbox_mode",)),
    ):
        for name in names:
            setting = (payload.get(block) or {}).get(name)
            if setting is not None and not isinstance(setting.get("enable"), bool):
                errors.append(
                    _err("Invalid type. Expected: boolean.", f"{block}.{name}.enable", block)
                )

    subject = payload.get("subject")
    if subject is not None and not isinstance(subject, str):
        errors.append(
            _err(f"Invalid type. Expected: string, given: {_json_type(subject)}.", "subject")
        )
    elif not subject and not has_template and not all_have_subject:
        errors.append(
            _err(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                "subject",
            )
        )

    content = payload.get("content")
    if content is None and not has_template:
        errors.append(
            _err(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block. We typically suggest both "
                "text/plain and text/html blocks are included, but only one block is required.",
                "content",
                "content",
            )
        )
    elif content is not None:
        if not isinstance(content, list) or not content:
            errors.append(
                _err(
                    "The content parameter must be an array with at least one content block.",
                    "content",
                    "content",
                )
            )
            content = []
        types: list[str] = []
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                errors.append(_err("Invalid type. Expected: object.", f"content.{i}", "content"))
                continue
            kind = block.get("type")
            if not isinstance(kind, str) or not kind:
                errors.append(
                    _err(
                        "The content type must be a string at least one character in length.",
                        f"content.{i}.type",
                        "content.type",
                    )
                )
            else:
                types.append(kind.lower())
            value = block.get("value")
            if not isinstance(value, str) or not value:
                errors.append(
                    _err(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        "content.value",
                    )
                )
        if types.count("text/plain") > 1 or types.count("text/html") > 1:
            errors.append(
                _err(
                    "If present, text/plain and text/html may only be provided once.",
                    "content",
                    "content",
                )
            )
        expected = [t for t in ("text/plain", "text/html") if t in types]
        if types[: len(expected)] != expected:
            errors.append(
                _err(
                    "If present, text/plain must be first, followed by text/html, followed by "
                    "any other content.",
                    "content",
                    "content",
                )
            )

    if "headers" in payload:
        headers = payload["headers"]
        _check_string_map(headers, "headers", errors)
        if isinstance(headers, dict):
            for name in headers:
                if str(name).lower() in _RESERVED_HEADERS:
                    errors.append(
                        _err(
                            f"The header {name} is reserved and cannot be set.",
                            f"headers.{name}",
                            "headers",
                        )
                    )
    if "custom_args" in payload:
        _check_string_map(payload["custom_args"], "custom_args", errors, max_bytes=10_000)
    if "categories" in payload:
        categories = payload["categories"]
        if not isinstance(categories, list):
            errors.append(
                _err(
                    f"Invalid type. Expected: array, given: {_json_type(categories)}.",
                    "categories",
                    "categories",
                )
            )
        else:
            if len(categories) > 10:
                errors.append(
                    _err(
                        "You may not have more than 10 categories per request.",
                        "categories",
                        "categories",
                    )
                )
            for i, category in enumerate(categories):
                if not isinstance(category, str) or not 0 < len(category) <= 255:
                    errors.append(
                        _err(
                            "A category must be a string of 1 to 255 characters.",
                            f"categories.{i}",
                            "categories",
                        )
                    )
    return errors


class _Server(ThreadingHTTPServer):
    """HTTP server with a reusing thread pool, CPU accounting and a hard stop.

    ``ThreadingHTTPServer`` starts a thread per connection, about 100 µs of CPU each;
    urllib-based clients (the ``sendgrid`` library) open a connection per request, so
    here a thread that finished a connection waits for the next one instead of exiting.
    The pool grows without bound (keep-alive connections each hold a thread) and idle
    threads exit after ``_IDLE_EXIT`` seconds.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # benchmarks open many connections at once
    standin: SendGridStandIn

    def __init__(self, address: tuple[str, int], standin: SendGridStandIn) -> None:
        super().__init__(address, _Handler)
        self.standin = standin
        self._jobs: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._idle = 0  # waiting workers minus jobs queued for them
        self._idle_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle_lock:
            if self._idle > 0:
                self._idle -= 1
                self._jobs.put((request, client_address))
                return
        threading.Thread(
            target=self._worker, args=((request, client_address),), daemon=True
        ).start()

    def _worker(self, job: tuple[Any, Any] | None) -> None:
        self.standin._thread_started()
        try:
            while job is not None:
                request, client_address = job
                self.standin._connection_opened(request)
                try:
                    self.process_request_thread(request, client_address)
                finally:
                    self.standin._connection_closed(request)
                job = self._next_job()
        finally:
            self.standin._thread_finished()

    def _next_job(self) -> tuple[Any, Any] | None:
        with self._idle_lock:
            self._idle += 1
        try:
            return self._jobs.get(timeout=_IDLE_EXIT)
        except queue.Empty:
            with self._idle_lock:
                if self._idle > 0:
                    self._idle -= 1
                    return None
            # A producer claimed an idle slot just as we timed out: its job is coming.
            return self._jobs.get()

    def release_idle_workers(self) -> None:
        """Wake every idle worker so it exits (used by stop)."""
        with self._idle_lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._jobs.put(None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are part of the job (fault injection);
        # only report what is not a plain connection error.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError | ValueError):
            return
        super().handle_error(request, client_address)


class _Headers(dict[str, str]):
    """Request headers with case-insensitive ``get``/``[]`` (keys stored lower-case)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "SendGridStandIn/1.0"
    disable_nagle_algorithm = True
    timeout = 30  # an idle keep-alive connection is closed after this many seconds
    server: _Server
    request_headers: _Headers

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: thousands of requests per second would flood the test output."""

    def parse_request(self) -> bool:
        """Parse the request line and headers without the ``email`` package.

        The stdlib's parser builds an ``email.message.Message`` per request, about a
        third of the stand-in's CPU per message; a plain dict is enough here.
        """
        self.command = ""
        # So that an error answer to a malformed request still gets a status line.
        self.request_version = version = "HTTP/1.1"
        self.close_connection = True
        line = str(getattr(self, "raw_requestline", b""), "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.send_error(400, f"Bad request line {line!r}")
            return False
        self.command, self.path, version = parts
        self.request_version = version
        headers = _Headers()
        for _ in range(_MAX_HEADERS):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon:
                self.send_error(400, "Bad header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        self.request_headers = headers
        self.headers = headers  # type: ignore[assignment]  # only .get() is used
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.close_connection = connection != "keep-alive"
        else:
            self.close_connection = connection == "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        standin = self.server.standin
        length = int(self.request_headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            self._answer(413, _errors_body(413))
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if path.startswith("/_standin/"):
            self._control(method, path, query, body)
            return
        standin._count_request()
        fault = standin._account_fault()
        if path == SCOPES_PATH and method == "GET":
            # https://twilio.com/docs/sendgrid/api-reference/api-key-permissions/retrieve-a-list-of-scopes-for-which-this-user-has-access
            if fault is not None and fault[0] == 401:
                self._answer(fault[0], _errors_body(fault[0], [_err(fault[1], None)]))
            elif self.request_headers.get("Authorization") != standin._auth:
                self._answer(401, _errors_body(401))
            else:
                self._answer(200, json.dumps({"scopes": _SCOPES}).encode())
            return
        if path in (VERIFIED_SENDERS_PATH, DOMAINS_PATH) and method == "GET":
            if self.request_headers.get("Authorization") != standin._auth:
                self._answer(401, _errors_body(401))
            elif fault is not None and fault[0] == 401:
                self._answer(fault[0], _errors_body(fault[0], [_err(fault[1], None)]))
            else:
                self._answer(200, standin._sender_lists(path, query))
            return
        if path != MAIL_SEND_PATH:
            self._answer(404, _errors_body(404))
            return
        if method != "POST":
            self._answer(405, _errors_body(405))
            return
        if fault is not None:
            field = "from" if fault[0] == 403 and "Sender Identity" in fault[1] else None
            self._answer(fault[0], _errors_body(fault[0], [_err(fault[1], field)]))
            return
        latency, allowed, limits = standin._admit()
        reply = _RATE_LIMITED if not allowed else standin._next_reply()
        if reply.delay or latency:
            standin._stopping.wait(reply.delay + latency)
        if reply.drop and not reply.accept:
            self._drop()
            return
        if not 200 <= reply.status < 300:
            own_limits = reply.status == 429 and reply.reset_in is not None
            self._answer(
                reply.status,
                _errors_body(reply.status, reply.errors),
                reply,
                extra=None if own_limits else limits,
            )
            return
        status, response, extra = standin._process(self.request_headers, body)
        if reply.drop:  # "lost": accepted, but the answer never arrives
            self._drop()
            return
        self._answer(status, response, extra={**(extra or {}), **(limits or {})})

    def _control(self, method: str, path: str, query: str, body: bytes) -> None:
        standin = self.server.standin
        try:
            data = json.loads(body) if body else None
            if method == "GET" and path == "/_standin/stats":
                result: Any = standin.stats()
            elif method == "GET" and path == "/_standin/messages":
                since = int(parse_qs(query).get("since", ["0"])[0])
                result = [
                    {"message_id": m.message_id, "received_at": m.received_at, "payload": m.payload}
                    for m in standin.messages[since:]
                ]
            elif method == "GET" and path == "/_standin/receipts":
                since = int(parse_qs(query).get("since", ["0"])[0])
                result = [list(row) for row in standin.receipts[since:]]
            elif method == "POST" and path == "/_standin/record":
                standin.record = bool((data or {}).get("messages", True))
                result = {"ok": True}
            elif method == "POST" and path == "/_standin/reset":
                standin.reset()
                result = {"ok": True}
            elif method == "POST" and path == "/_standin/script":
                standin.script(data or [])
                result = {"ok": True}
            elif method == "POST" and path == "/_standin/faults":
                standin.faults(**(data or {}))
                result = {"ok": True}
            elif method == "POST" and path == "/_standin/latency":
                standin.latency(**(data or {}))
                result = {"ok": True}
            elif method == "POST" and path == "/_standin/account_fault":
                standin.account_fault(**(data or {}))
                result = {"ok": True}
            elif method == "POST" and path == "/_standin/rate_limit":
                standin.rate_limit(**(data or {}))
                result = {"ok": True}
            else:
                self._answer(404, _errors_body(404))
                return
        except (ValueError, TypeError) as exc:
            self._answer(400, json.dumps({"errors": [_err(str(exc), None)]}).encode())
            return
        self._answer(200, json.dumps(result).encode())

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(
        self,
        status: int,
        body: bytes,
        reply: Reply | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        # One write per response: faster than send_response/send_header, and no
        # partial responses for Nagle to delay.
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Server: nginx",
            f"Content-Length: {len(body)}",
        ]
        if body:
            lines.append("Content-Type: application/json")
        reset_in = reply.reset_in if reply else 1.0
        if status == 429 and reset_in is not None:
            lines += [
                "X-RateLimit-Limit: 600",
                "X-RateLimit-Remaining: 0",
                f"X-RateLimit-Reset: {int(time.time() + reset_in)}",
            ]
        if reply is not None:
            lines += [f"{k}: {v}" for k, v in reply.headers.items()]
        if extra:
            lines += [f"{k}: {v}" for k, v in extra.items()]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)


def _errors_body(status: int, errors: Sequence[Mapping[str, Any]] | None = None) -> bytes:
    if errors is None:
        errors = [{"message": _DEFAULT_ERRORS.get(status, "error"), "field": None, "help": None}]
    return json.dumps({"errors": list(errors)}).encode()


class SendGridStandIn:
    """The stand-in server. Start it with ``with`` or :meth:`start`; thread-safe.

    Attributes:
        api_key: The key clients must send as ``Authorization: Bearer <key>``.
        record: Keep every accepted payload (turn off for long benchmarks; counts stay).
        verified_senders: When set, a ``from`` address outside it (and outside
            ``authenticated_domains``) gets SendGrid's 403 "does not match a verified
            Sender Identity"; :meth:`verify_sender` adds one. ``GET /v3/verified_senders``
            lists them (verified), and the refused ones asked for (unverified).
        authenticated_domains: Domains whose addresses may send (Domain Authentication,
            listed ``valid`` by ``GET /v3/whitelabel/domains``).
        slow_delay: Seconds a ``"slow"`` fault waits before answering.
    """

    def __init__(
        self,
        api_key: str = "SG.standin-test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        verified_senders: Iterable[str] | None = None,
        authenticated_domains: Iterable[str] = (),
        slow_delay: float = 2.0,
    ) -> None:
        self.api_key = api_key
        self.record = record
        self.verified_senders = (
            None if verified_senders is None else {s.lower() for s in verified_senders}
        )
        self.authenticated_domains = {d.lower() for d in authenticated_domains}
        self._pending_senders: set[str] = set()  # refused: listed unverified
        self.sender_refusals = 0  # mail sends refused for an unverified sender
        self.sender_lookups = 0  # GET /v3/verified_senders and /v3/whitelabel/domains
        self.slow_delay = slow_delay
        self._host = host
        self._port = port
        self._auth = f"Bearer {api_key}"
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._receipts: list[tuple[str, float]] = []
        self._requests = 0
        self._accepted = 0
        self._script: deque[Reply] = deque()
        self._fault_rate = 0.0
        self._fault_kinds: tuple[str, ...] = ()
        self._rng = random.Random()
        self._latency = Latency()
        self._rate: RateLimitWindow | None = None
        self._fault: tuple[int, str] | None = None
        self._fault_until = 0.0
        self.fault_refusals = 0  # mail sends refused by an account fault
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # CPU accounting: finished threads' total + live threads' clocks.
        self._cpu_lock = threading.Lock()
        self._cpu_done = 0.0
        self._live: dict[int, int | None] = {}  # thread ident -> CPU clock id
        self._connections: set[Any] = set()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> SendGridStandIn:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=self._serve, name=f"sendgrid-standin-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection (idempotent)."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.release_idle_workers()
        with self._cpu_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def cut_connections(self) -> int:
        """Close every open client connection, as a server's idle timeout does; keep
        serving. Returns how many were cut."""
        with self._cpu_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(connections)

    def __enter__(self) -> SendGridStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._server is not None
        server = self._server
        self._thread_started()
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            self._thread_finished()

    # ---------------------------------------------------------------- properties
    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running; use it in a with block")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to use as ``NURTURE_SENDGRID_HOST``."""
        return f"http://{self._host}:{self.port}"

    @property
    def messages(self) -> list[Received]:
        """A snapshot of every accepted message, in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def requests(self) -> int:
        """How many API requests arrived (faulted and refused ones included)."""
        with self._lock:
            return self._requests

    @property
    def receipts(self) -> list[tuple[str, float]]:
        """(``custom_args.lead_id``, receive time) of every accepted message, in
        arrival order; kept even when ``record`` is off (for long benchmarks)."""
        with self._lock:
            return list(self._receipts)

    @property
    def accepted(self) -> int:
        """How many messages were accepted (counted even when ``record`` is off)."""
        with self._lock:
            return self._accepted

    # ------------------------------------------------------------------ control
    def script(self, replies: Iterable[Reply | int | str | Mapping[str, Any]]) -> None:
        """Queue answers for the next requests, in order; they win over :meth:`faults`.

        Args:
            replies: Status codes (``429``; a 2xx means "answer normally"), fault kinds
                (``"slow"``, ``"drop"``, ``"lost"``), dicts of :class:`Reply` fields, or
                :class:`Reply` objects.
        """
        parsed = [Reply.of(item, self.slow_delay) for item in replies]
        with self._lock:
            self._script.extend(parsed)

    def faults(
        self,
        rate: float = 0.0,
        kinds: Iterable[str] = ("429", "500", "slow", "drop"),
        seed: int | None = None,
        slow_delay: float | None = None,
    ) -> None:
        """Inject a random fault into a share of the requests (``rate=0`` turns it off).

        Args:
            rate: Probability (0..1) that a request gets a fault.
            kinds: Fault kinds to pick from uniformly (see the module docstring).
            seed: Seed for reproducible runs.
            slow_delay: New delay for ``"slow"`` faults.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        kinds = tuple(str(k).lower() for k in kinds)
        for kind in kinds:
            Reply.of(kind)  # validate early, not on the serving thread
        if rate and not kinds:
            raise ValueError("give at least one fault kind")
        with self._lock:
            if slow_delay is not None:
                self.slow_delay = slow_delay
            self._fault_rate = rate
            self._fault_kinds = kinds
            self._rng = random.Random(seed)

    def latency(
        self, median: float = 0.0, p95: float | None = None, seed: int | None = None
    ) -> None:
        """Delay every mail-send answer (``median=0`` turns it off).

        Args:
            median: Seconds; the fixed delay when ``p95`` is not given.
            p95: With it, delays are lognormal with this 95th percentile (>= median).
            seed: Seed for reproducible delays.
        """
        latency = Latency(median, p95, seed)
        with self._lock:
            self._latency = latency

    def account_fault(self, kind: str | None = "revoked", seconds: float = 3600.0) -> None:
        """Refuse every request for ``seconds`` as SendGrid does for an account fault.

        Args:
            kind: A key of :data:`ACCOUNT_FAULTS` (``"revoked"``: the key was revoked,
                401; ``"credits"``: 401 "Maximum credits exceeded"; ``"sender"``: 403 for
                an unverified Sender Identity; ...), or None to end the fault now.
            seconds: How long the fault lasts; then the account works again.
        """
        if kind is not None and kind not in ACCOUNT_FAULTS:
            raise ValueError(f"unknown account fault {kind!r}; use one of {list(ACCOUNT_FAULTS)}")
        with self._lock:
            self._fault = None if kind is None else ACCOUNT_FAULTS[kind]
            self._fault_until = time.monotonic() + seconds

    def _account_fault(self) -> tuple[int, str] | None:
        with self._lock:
            if self._fault is not None and time.monotonic() >= self._fault_until:
                self._fault = None
            if self._fault is not None:
                self.fault_refusals += 1
            return self._fault

    def rate_limit(self, limit: int | None = None, period: float = 1.0) -> None:
        """Limit mail sends to ``limit`` per ``period`` seconds, as SendGrid does; every
        answer then carries ``X-RateLimit-*`` and requests beyond the limit get a 429.
        ``limit=None`` turns it off."""
        window = None if limit is None else RateLimitWindow(limit, period)
        with self._lock:
            self._rate = window

    def verify_sender(self, address: str) -> None:
        """The address becomes a verified Single Sender (as when its owner clicks the
        link of SendGrid's verification email)."""
        with self._lock:
            self.verified_senders = {*(self.verified_senders or ()), address.lower()}
            self._pending_senders.discard(address.lower())

    def _may_send_from(self, address: str) -> bool:
        sender = address.lower()
        with self._lock:
            if self.verified_senders is None or sender in self.verified_senders:
                return True
            domain = sender.rpartition("@")[2]
            if any(domain == d or domain.endswith("." + d) for d in self.authenticated_domains):
                return True
            self._pending_senders.add(sender)
            self.sender_refusals += 1
            return False

    def _sender_lists(self, path: str, query: str) -> bytes:
        """``GET /v3/verified_senders`` (``{"results": [...]}``, paged by ``limit`` and
        ``lastSeenID``) or ``GET /v3/whitelabel/domains`` (a list, ``limit``/``offset``),
        in the shapes SendGrid documents:
        https://twilio.com/docs/sendgrid/api-reference/sender-verification/get-all-verified-senders,
        https://twilio.com/docs/sendgrid/api-reference/domain-authentication/list-all-authenticated-domains.
        """
        params = dict(parse_qsl(query))
        limit = int(params.get("limit", 100))
        with self._lock:
            self.sender_lookups += 1
            verified = sorted(self.verified_senders or ())
            senders = [(e, True) for e in verified] + [
                (e, False) for e in sorted(self._pending_senders)
            ]
            domains = sorted(self.authenticated_domains)
        if path == VERIFIED_SENDERS_PATH:
            after = int(params.get("lastSeenID", 0))
            results = [
                {"id": n, "nickname": email, "from_email": email, "verified": ok, "locked": False}
                for n, (email, ok) in enumerate(senders, start=1)
                if n > after
            ]
            return json.dumps({"results": results[:limit]}).encode()
        offset = int(params.get("offset", 0))
        items = [
            {"id": n, "domain": d, "subdomain": "em1234", "valid": True, "default": n == 1}
            for n, d in enumerate(domains, start=1)
        ]
        return json.dumps(items[offset : offset + limit]).encode()

    def reset(self) -> None:
        """Forget messages, counts, the script, the faults, the latency and the rate limit."""
        with self._lock:
            self._messages.clear()
            self._receipts.clear()
            self._requests = 0
            self._accepted = 0
            self._script.clear()
            self._fault_rate = 0.0
            self._fault_kinds = ()
            self._latency = Latency()
            self._rate = None
            self._fault = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages were accepted.

        Returns:
            The messages received so far.

        Raises:
            TimeoutError: Naming how many arrived.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while self._accepted < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"stand-in got {self._accepted} of {count} messages in {timeout} s"
                    )
                self._arrived.wait(left)
            return list(self._messages)

    def cpu_time(self) -> float:
        """CPU seconds spent by the stand-in's own threads (acceptor and handlers)."""
        clock = getattr(time, "clock_gettime", None)
        with self._cpu_lock:
            total = self._cpu_done
            if clock is not None:
                for clock_id in self._live.values():
                    if clock_id is not None:
                        # Safe: a thread removes itself under this lock before exiting.
                        with contextlib.suppress(OSError):
                            total += clock(clock_id)
        return total

    def stats(self) -> dict[str, Any]:
        """Counts and CPU time, as served by ``GET /_standin/stats``."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self._lock:
            counts = {
                "requests": self._requests,
                "accepted": self._accepted,
                "recorded": len(self._messages),
                "scripted_left": len(self._script),
                "rate_limited": self._rate.refused if self._rate else 0,
            }
        return {
            **counts,
            "cpu_seconds": self.cpu_time(),
            "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
        }

    # ----------------------------------------------------------- request side
    def _count_request(self) -> None:
        with self._lock:
            self._requests += 1

    def _admit(self) -> tuple[float, bool, dict[str, str] | None]:
        """Latency to apply, whether the rate limit admits the request, and the
        ``X-RateLimit-*`` headers to answer (None when no limit is set)."""
        with self._lock:
            latency, rate = self._latency, self._rate
            allowed, headers = rate.take(time.time()) if rate else (True, None)
        return latency.draw(), allowed, headers

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self._fault_rate and self._rng.random() < self._fault_rate:
                kind = self._rng.choice(self._fault_kinds)
                return Reply.of(kind, self.slow_delay)
        return _NORMAL

    def _process(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str] | None]:
        """Authorize, validate and record one mail send; returns (status, body, headers)."""
        if headers.get("Authorization") != self._auth:
            return 401, _errors_body(401), None
        content_type = headers.get("Content-Type") or "application/json"
        if not content_type.lower().startswith("application/json"):
            return 415, _errors_body(415), None
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, _errors_body(400), None
        errors = validate_payload(payload)
        if errors:
            return 400, json.dumps({"errors": errors}).encode(), None
        if not self._may_send_from(str(payload["from"]["email"])):
            return 403, _errors_body(403, [_err(_UNVERIFIED_SENDER, "from")]), None
        message_id = secrets.token_urlsafe(16)
        custom_args = payload.get("custom_args")
        lead = str(custom_args.get("lead_id", "")) if isinstance(custom_args, dict) else ""
        with self._lock:
            self._accepted += 1
            self._receipts.append((lead, time.time()))
            if self.record:
                self._messages.append(
                    Received(payload, message_id, time.time(), dict(headers.items()))
                )
            self._arrived.notify_all()
        return 202, b"", {"X-Message-Id": message_id}

    def _thread_started(self) -> None:
        clock_id: int | None = None
        getter = getattr(time, "pthread_getcpuclockid", None)
        if getter is not None:
            with contextlib.suppress(OSError):
                clock_id = getter(threading.get_ident())
        with self._cpu_lock:
            self._live[threading.get_ident()] = clock_id

    def _thread_finished(self) -> None:
        spent = time.thread_time()
        with self._cpu_lock:
            self._live.pop(threading.get_ident(), None)
            self._cpu_done += spent

    def _connection_opened(self, connection: Any) -> None:
        with self._cpu_lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: Any) -> None:
        with self._cpu_lock:
            self._connections.discard(connection)


_NORMAL = Reply()
# Over the rate limit: SendGrid's documented 429 body; the X-RateLimit-* headers come
# from the window (reset_in=None: no default ones).
_RATE_LIMITED = Reply(
    status=429, errors=[{"field": None, "message": "too many requests"}], reset_in=None
)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sendgrid_standin", description="SendGrid v3 Mail Send stand-in"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", default="SG.standin-test-key", help="API key to accept")
    parser.add_argument("--no-record", action="store_true", help="count messages, keep none")
    parser.add_argument("--faults-rate", type=float, default=0.0)
    parser.add_argument("--faults-kinds", default="429,500,slow,drop")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--slow-delay", type=float, default=2.0)
    parser.add_argument("--latency", type=float, default=0.0, help="answer delay, seconds")
    parser.add_argument("--latency-p95", type=float, default=None, help="lognormal p95, seconds")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per period")
    parser.add_argument("--rate-period", type=float, default=1.0, help="seconds")
    args = parser.parse_args(argv)

    standin = SendGridStandIn(
        args.key,
        host=args.host,
        port=args.port,
        record=not args.no_record,
        slow_delay=args.slow_delay,
    )
    if args.faults_rate:
        standin.faults(args.faults_rate, args.faults_kinds.split(","), args.seed)
    if args.latency:
        standin.latency(args.latency, args.latency_p95, args.seed)
    if args.rate_limit:
        standin.rate_limit(args.rate_limit, args.rate_period)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with standin:
        # The port alone on the first line, for scripts; the rest goes to stderr.
        print(standin.port, flush=True)
        print(f"SendGrid stand-in on {standin.url} (key {args.key})", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print(json.dumps(standin.stats()), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
