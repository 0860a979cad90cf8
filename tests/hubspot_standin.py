"""A local stand-in for HubSpot's CRM contacts API, answering as HubSpot documents.

A real threaded HTTP server on 127.0.0.1 that answers
``POST /crm/v3/objects/contacts/batch/read`` the way HubSpot's documentation shows:

- ``Authorization: Bearer <token>`` is checked: a wrong token gets a 401
  (https://developers.hubspot.com/docs/api/intro-to-auth);
- more than 100 inputs get a 400 ``VALIDATION_ERROR``;
- every id found is in ``results`` (``id``, ``properties`` limited to those asked for,
  with ``hs_object_id``; ``createdAt``, ``updatedAt``, ``archived: false``), answered
  ``200``; ids not found (never created, deleted, archived) make the answer ``207``
  with one ``OBJECT_NOT_FOUND`` error naming them in ``context.ids``
  (https://developers.hubspot.com/docs/api/crm/contacts, "Retrieve contacts"; the
  multi-status shape: https://github.com/HubSpot/hubspot-api-php/issues/619);
- a contact merged into another (:meth:`HubSpotStandIn.merge`) is answered with the
  surviving record, whose ``hs_merged_object_ids`` lists the merged id (the property:
  https://github.com/HubSpot/hubspot-api-nodejs/issues/6). The pages found do not say
  whether a batch read of a merged-away id returns the survivor or an OBJECT_NOT_FOUND;
  the reader handles both, and ``merge(..., redirect=False)`` gives the latter;
- scripted answers: ``429`` with HubSpot's rate-limit body and
  ``X-HubSpot-RateLimit-*`` headers (https://developers.hubspot.com/docs/api/usage-details)
  and, if asked, ``Retry-After``; any 5xx; a dropped connection; added latency.

In tests::

    with HubSpotStandIn() as hs:
        hs.add_contact("1042", email="ann@example.com", firstname="Ann")
        hs.script([429, 502])      # the next two answers, then normal ones
        hs.latency = 0.2           # seconds before every answer
        reader = HubSpotContacts(token=hs.token, api_url=hs.url)
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

BATCH_READ = "/crm/v3/objects/contacts/batch/read"


@dataclass
class Scripted:
    """One scripted answer: a status, extra headers, or ``drop`` (close, no answer)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class HubSpotStandIn:
    """The stand-in server; use as a context manager.

    Attributes:
        token: The bearer token it accepts.
        url: Its base URL (for ``NURTURE_HUBSPOT_API_URL``).
        latency: Seconds slept before answering each request.
        requests: Decoded bodies of the batch reads received, in order.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token or f"pat-eu1-{secrets.token_hex(8)}"
        self.latency = 0.0
        self.requests: list[dict[str, Any]] = []
        self.contacts: dict[str, dict[str, str | None]] = {}
        self.merged: dict[str, str] = {}
        #: The stand-in's clock (a test gives it its manual clock's ``now``): what
        #: ``updatedAt`` and the batch times say.
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.updated: dict[str, datetime] = {}
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.standin = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubSpotStandIn:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the data -------------------------------------------------------------------

    def add_contact(self, object_id: str, **properties: str | None) -> None:
        """Create or update a contact (HubSpot's values are text)."""
        with self._lock:
            self.contacts.setdefault(object_id, {}).update(properties)
            # HubSpot's updatedAt is when the record last changed (milliseconds), not
            # when it is read: a change at the same moment still moves it on.
            last = self.updated.get(object_id)
            stamp = self.now()
            if last is not None and stamp <= last:
                stamp = last + timedelta(milliseconds=1)
            self.updated[object_id] = stamp

    def delete_contact(self, object_id: str) -> None:
        """Archive a contact: it is no longer returned (HubSpot's delete archives)."""
        with self._lock:
            self.contacts.pop(object_id, None)

    def merge(self, secondary: str, primary: str, redirect: bool = True) -> None:
        """Merge ``secondary`` into ``primary``; ``redirect``: reads of the secondary id
        answer with the primary record (else the secondary id is not found)."""
        with self._lock:
            self.contacts.pop(secondary, None)
            if redirect:
                self.merged[secondary] = primary
            record = self.contacts.setdefault(primary, {})
            listed = [i for i in (record.get("hs_merged_object_ids") or "").split(";") if i]
            record["hs_merged_object_ids"] = ";".join([*listed, secondary])

    def script(self, answers: Iterable[int | str | Scripted]) -> None:
        """Queue the next answers: a status code, ``"drop"``, or a :class:`Scripted`."""
        with self._lock:
            for item in answers:
                if isinstance(item, Scripted):
                    self._script.append(item)
                elif item == "drop":
                    self._script.append(Scripted(drop=True))
                else:
                    self._script.append(Scripted(status=int(item)))

    # -- answering ------------------------------------------------------------------

    def next_scripted(self) -> Scripted | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def batch_read(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """HubSpot's answer to one batch read body."""
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            return 400, _error(
                "VALIDATION_ERROR", f"Batch input size {len(inputs)} exceeds the limit of 100"
            )
        wanted = [str(p) for p in body.get("properties") or []]
        now = _iso(self.now())
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        with self._lock:
            self.requests.append(body)
            for item in inputs:
                asked = str(item.get("id"))
                object_id = self.merged.get(asked, asked)
                record = self.contacts.get(object_id)
                if record is None:
                    missing.append(asked)
                    continue
                props = {name: record.get(name) for name in wanted}
                props["hs_object_id"] = object_id
                results.append(
                    {
                        "id": object_id,
                        "properties": props,
                        "createdAt": "2026-11-20T09:00:00.000Z",
                        "updatedAt": _iso(self.updated.get(object_id) or self.now()),
                        "archived": False,
                    }
                )
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if not missing:
            return 200, answer
        answer["numErrors"] = 1
        answer["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not "
                "exist. Check that ids are valid.",
                "context": {"ids": missing},
            }
        ]
        return 207, answer


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _error(category: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "message": message,
        "correlationId": secrets.token_hex(16),
        "category": category,
        **extra,
    }


def _scripted_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": secrets.token_hex(16),
            "policyName": "TEN_SECONDLY_ROLLING",
        }
    if status >= 500:
        return _error("INTERNAL_ERROR", "internal error")
    return _error("VALIDATION_ERROR", f"scripted {status}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are written separately: without this, delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        standin: HubSpotStandIn = self.server.standin  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if standin.latency:
            time.sleep(standin.latency)
        if self.path.split("?")[0] != BATCH_READ:
            self._send(404, _error("OBJECT_NOT_FOUND", "resource not found"))
            return
        if self.headers.get("Authorization") != f"Bearer {standin.token}":
            self._send(
                401,
                _error(
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                ),
            )
            return
        scripted = standin.next_scripted()
        if scripted is not None and scripted.drop:
            self.close_connection = True
            self.connection.close()
            return
        if scripted is not None and scripted.status != 200:
            headers = dict(scripted.headers)
            if scripted.status == 429:
                headers = {
                    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                    "X-HubSpot-RateLimit-Max": "100",
                    "X-HubSpot-RateLimit-Remaining": "0",
                    **headers,
                }
            self._send(scripted.status, _scripted_body(scripted.status), headers)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, _error("VALIDATION_ERROR", "Invalid input JSON"))
            return
        status, answer = standin.batch_read(body)
        self._send(
            status,
            answer,
            {
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "99",
            },
        )

    def _send(
        self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
