"""Reading HubSpot contacts through the CRM objects API, with HubSpot's official client.

One call, :meth:`HubSpotContacts.read_contacts`, reads many contacts at once through
``POST /crm/v3/objects/contacts/batch/read`` (at most 100 ids a request; more are read in
several requests). Each id comes back as :class:`Found` (its properties) or :class:`Gone`
(HubSpot names it in an ``OBJECT_NOT_FOUND`` error: deleted, archived or never there); a
call that fails as a whole raises a typed error:

- :class:`HubSpotRateLimitedError`: HTTP 429, with the seconds to wait from HubSpot's
  headers (``Retry-After``, else ``X-HubSpot-RateLimit-Interval-Milliseconds``);
- :class:`HubSpotUnavailableError`: HTTP 5xx, a timeout or a network error; reading is
  idempotent, so the caller simply tries again later;
- :class:`HubSpotConfigError`: 401 (bad ``NURTURE_HUBSPOT_TOKEN``), 403 (a missing scope),
  another 4xx, or an answer that is not HubSpot's (``NURTURE_HUBSPOT_API_URL``): retrying
  does not help until the setting is fixed.

:class:`HubSpotRateLimiter` spaces calls across every worker process (a rolling window
in Redis, keys under ``nurture:hubspot:``) so that HubSpot's documented burst limit is
not hit in the first place. See docs/crm.md for the pages these formats come from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.contacts import ApiException, BatchReadInputSimplePublicObjectId
from urllib3.util.retry import Retry

from worker.errors import NurtureError, SettingsError
from worker.settings import Settings
from worker.store.hubspot_limit import HubSpotWindow

BATCH_SIZE = 100  # HubSpot's limit of inputs per batch read
# Properties always read: HubSpot's own id and the ids merged into the record.
ALWAYS_READ = ("hs_object_id", "hs_merged_object_ids")


class HubSpotError(NurtureError):
    """Raised when HubSpot's API could not answer a read; the message says what to do."""


class HubSpotUnavailableError(HubSpotError):
    """Raised for a 5xx answer, a timeout or a network error: try again later.

    Attributes:
        retry_after: Seconds HubSpot asked us to wait, when it said so.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HubSpotRateLimitedError(HubSpotUnavailableError):
    """Raised for HTTP 429: wait ``retry_after`` seconds, then try again.

    Attributes:
        retry_after: Seconds to wait, from HubSpot's headers (never None).
        policy: HubSpot's ``policyName`` (``TEN_SECONDLY_ROLLING``, ``DAILY``...), if given.
    """

    def __init__(self, message: str, retry_after: float, policy: str | None) -> None:
        super().__init__(message, retry_after)
        self.retry_after: float = retry_after
        self.policy = policy


class HubSpotConfigError(HubSpotError):
    """Raised when retrying cannot help until a setting is fixed (401, 403, other 4xx,
    or an answer that is not HubSpot's). The message names the setting."""


@dataclass(frozen=True)
class Found:
    """A contact HubSpot returned.

    Attributes:
        id: The id that was asked for.
        record_id: HubSpot's id of the record returned (differs from ``id`` when the
            contact asked for was merged into this one).
        properties: The properties asked for (HubSpot sends every value as text or null).
        updated_at: When HubSpot last changed the record.
    """

    id: str
    record_id: str
    properties: dict[str, str | None]
    updated_at: datetime | None = None

    @property
    def merged_into(self) -> str | None:
        """The surviving record's id when ``id`` was merged into another contact."""
        return self.record_id if self.record_id != self.id else None


@dataclass(frozen=True)
class Gone:
    """A contact HubSpot says it does not have (deleted, archived or never existed).

    Attributes:
        id: The id that was asked for.
        reason: HubSpot's message.
    """

    id: str
    reason: str


ContactResult = Found | Gone


@dataclass
class HubSpotContacts:
    """Reads contacts with a private-app (or service-key) token.

    Attributes:
        token: The access token (needs the ``crm.objects.contacts.read`` scope).
        api_url: HubSpot's API base URL (``NURTURE_HUBSPOT_API_URL``).
        timeout: Seconds for connecting plus reading one answer.
        limiter: Shared rate limiter, waited on before each request (None: no limit).
    """

    token: str = field(repr=False)  # never in logs
    api_url: str = "https://api.hubapi.com"
    timeout: float = 10.0
    limiter: HubSpotRateLimiter | None = None
    _client: Any = field(default=None, init=False, repr=False)
    _batch_api: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # retries=0: the queue's backoff retries, so a slow HubSpot never blocks a worker
        # thread in urllib3's own retry loop, and every attempt passes the rate limiter.
        self._client = HubSpot(
            access_token=self.token,
            host=self.api_url.rstrip("/"),
            retry=Retry(total=0, connect=0, read=0, redirect=0, status=0),
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, limiter: HubSpotRateLimiter | None = None
    ) -> HubSpotContacts:
        """Build a reader from ``NURTURE_HUBSPOT_TOKEN`` and ``NURTURE_HUBSPOT_API_URL``.

        Raises:
            SettingsError: When no token is set.
        """
        if settings.hubspot_token is None or not settings.hubspot_token.get_secret_value():
            raise SettingsError(
                "NURTURE_HUBSPOT_TOKEN is required to read HubSpot contacts; create a "
                "token with the crm.objects.contacts.read scope (docs/crm.md)"
            )
        return cls(
            token=settings.hubspot_token.get_secret_value(),
            api_url=settings.hubspot_api_url,
            limiter=limiter,
        )

    def read_contacts(
        self, ids: Iterable[str], properties: Iterable[str]
    ) -> dict[str, ContactResult]:
        """Read contacts by HubSpot id, 100 per request.

        Args:
            ids: HubSpot contact ids (``objectId`` of the webhooks); repeats are read once.
            properties: HubSpot property names to return (``hs_object_id`` and
                ``hs_merged_object_ids`` are always added).

        Returns:
            Every id asked for -> :class:`Found` or :class:`Gone`.

        Raises:
            HubSpotRateLimitedError: On HTTP 429.
            HubSpotUnavailableError: On 5xx, a timeout or a network error.
            HubSpotConfigError: On 401, 403, other 4xx or an answer not from HubSpot.
        """
        wanted = list(dict.fromkeys(str(i) for i in ids))
        names = sorted({*properties, *ALWAYS_READ})
        results: dict[str, ContactResult] = {}
        for start in range(0, len(wanted), BATCH_SIZE):
            results.update(self._read_batch(wanted[start : start + BATCH_SIZE], names))
        return results

    def _read_batch(self, ids: list[str], names: list[str]) -> dict[str, ContactResult]:
        if self.limiter is not None:
            self.limiter.wait()
        body = BatchReadInputSimplePublicObjectId(
            inputs=[{"id": i} for i in ids], properties=names, properties_with_history=[]
        )
        try:
            # _preload_content=False: the client's model objects cost ~85 ms per 100
            # contacts (measured, docs/crm.md); the JSON is read here in ~1 ms.
            response = self._api().read(
                body, archived=False, _preload_content=False, _request_timeout=self.timeout
            )
            try:
                raw = response.data
            finally:
                response.release_conn()
        except ApiException as exc:
            try:
                return _from_error(exc, ids)
            except HubSpotRateLimitedError as limited:
                # HubSpot counts per account: every worker waits, not only this one.
                if self.limiter is not None:
                    self.limiter.pause(limited.retry_after)
                raise
        except urllib3.exceptions.HTTPError as exc:
            raise HubSpotUnavailableError(
                f"HubSpot API at {self.api_url} did not answer ({_network_reason(exc)}); will retry"
            ) from None
        answer = _json(raw)
        records = answer.get("results")
        if not isinstance(records, list):
            raise HubSpotConfigError(
                f"the answer from {self.api_url} is not HubSpot's batch format; check "
                "NURTURE_HUBSPOT_API_URL"
            )
        errors = answer.get("errors")
        return _sort_answer(ids, records, errors if isinstance(errors, list) else [])

    def _api(self) -> Any:
        # The client builds a new ApiClient (and connection pool) on every attribute
        # access: keep one, so connections are reused.
        if self._batch_api is None:
            self._batch_api = self._client.crm.contacts.batch_api
        return self._batch_api


def _sort_answer(
    ids: Sequence[str], records: Sequence[Any], errors: Sequence[Any]
) -> dict[str, ContactResult]:
    """Map each requested id to the record HubSpot returned for it, or to Gone."""
    out: dict[str, ContactResult] = {}
    by_id: dict[str, dict[str, Any]] = {}
    merged: dict[str, dict[str, Any]] = {}
    for record in records:
        if not isinstance(record, dict) or "id" not in record:
            continue
        by_id[str(record["id"])] = record
        # A merged-away id may be answered with the surviving record, which lists it.
        props = record.get("properties") or {}
        for old in str(props.get("hs_merged_object_ids") or "").split(";"):
            if old.strip():
                merged.setdefault(old.strip(), record)
    for wanted in ids:
        found = by_id.get(wanted) or merged.get(wanted)
        if found is not None:
            props = found.get("properties")
            out[wanted] = Found(
                id=wanted,
                record_id=str(found["id"]),
                properties=dict(props) if isinstance(props, dict) else {},
                updated_at=_parse_time(found.get("updatedAt")),
            )
    for err in errors:
        if not isinstance(err, dict) or err.get("category") != "OBJECT_NOT_FOUND":
            continue
        context = err.get("context")
        named = context.get("ids") if isinstance(context, dict) else None
        for gone in named or []:
            if str(gone) in ids and str(gone) not in out:
                out[str(gone)] = Gone(id=str(gone), reason=str(err.get("message") or "not found"))
    missing = [i for i in ids if i not in out]
    if missing:
        # HubSpot names every id it did not return; silence would lose a change.
        raise HubSpotUnavailableError(
            f"HubSpot's answer said nothing about contact(s) {', '.join(missing[:5])}; will retry"
        )
    return out


def _from_error(exc: ApiException, ids: list[str]) -> dict[str, ContactResult]:
    """An error answer as Gone results (a 404 naming the ids) or a typed error."""
    status = int(exc.status or 0)
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    body = _json(exc.body)
    message = str(body.get("message") or exc.reason or "")
    if status == 404 and body.get("category") == "OBJECT_NOT_FOUND":
        named = {str(i) for i in (body.get("context") or {}).get("ids", [])}
        if named >= set(ids):
            return {i: Gone(id=i, reason=message or "not found") for i in ids}
    if status == 429:
        wait = retry_after_seconds(headers)
        policy = body.get("policyName")
        raise HubSpotRateLimitedError(
            f"HubSpot rate limit reached ({policy or 'no policy named'}): {message}; "
            f"retrying in {wait:g}s",
            wait,
            str(policy) if policy else None,
        )
    if status >= 500 or status == 0:
        raise HubSpotUnavailableError(
            f"HubSpot API answered {status or 'nothing'} ({message or exc.reason}); will retry",
            _header_seconds(headers.get("retry-after")),
        )
    if status == 401:
        raise HubSpotConfigError(
            f"HubSpot refused NURTURE_HUBSPOT_TOKEN (401: {message}); create a new token "
            "with the crm.objects.contacts.read scope"
        )
    if status == 403:
        raise HubSpotConfigError(
            f"HubSpot refused the read (403: {message}); give the token of "
            "NURTURE_HUBSPOT_TOKEN the crm.objects.contacts.read scope"
        )
    raise HubSpotConfigError(
        f"HubSpot API at NURTURE_HUBSPOT_API_URL answered {status} ({message or exc.reason}); "
        "check the setting (default https://api.hubapi.com)"
    )


def retry_after_seconds(headers: dict[str, str]) -> float:
    """Seconds to wait after a 429, from HubSpot's headers (lower-cased names).

    ``Retry-After`` (seconds or an HTTP date) wins; else, when the rolling window is used
    up, one window (``X-HubSpot-RateLimit-Interval-Milliseconds``); else 10 seconds,
    HubSpot's documented burst window.
    """
    explicit = _header_seconds(headers.get("retry-after"))
    if explicit is not None:
        return explicit
    interval = headers.get("x-hubspot-ratelimit-interval-milliseconds")
    try:
        if interval is not None and float(interval) > 0:
            return float(interval) / 1000
    except ValueError:
        pass
    return 10.0


def _header_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _json(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes | str):
        try:
            doc = json.loads(raw)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}
    return {}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _network_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return type(reason or exc).__name__


# -- the shared rate limiter ----------------------------------------------------------


@dataclass
class HubSpotRateLimiter:
    """Keeps every worker together under HubSpot's burst limit.

    HubSpot's usage guidelines give private apps 100 requests per 10 seconds on Free and
    Starter accounts (190 on Professional and Enterprise), counted per account across all
    its apps; the default keeps a margin under the smallest. One batch read is one request.
    After a 429 the reader calls :meth:`pause`, and every worker waits out HubSpot's
    ``Retry-After`` (``nurture:hubspot:pause``) before its next request.

    Attributes:
        redis: A redis-py client (the worker's).
        max_requests: Requests allowed per window.
        window: Window length in seconds.
        max_wait: Longest :meth:`wait` blocks before giving up with an error.
    """

    redis: Any
    max_requests: int = 90
    window: float = 10.0
    max_wait: float = 30.0
    _window: HubSpotWindow = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._window = HubSpotWindow(self.redis)

    def try_acquire(self) -> float:
        """Take a place in the window; 0 when taken, else seconds until one frees up."""
        return self._window.take(self.window, self.max_requests)

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` (after HubSpot answered 429), unless a
        longer pause is already set."""
        self._window.pause(seconds)

    def wait(self) -> None:
        """Block until a place is free.

        Raises:
            HubSpotRateLimitedError: When none frees up within ``max_wait`` seconds
                (the caller's retry then waits outside the worker thread).
        """
        deadline = time.monotonic() + self.max_wait
        while True:
            pause = self.try_acquire()
            if pause == 0:
                return
            if time.monotonic() + pause > deadline:
                raise HubSpotRateLimitedError(
                    f"our own HubSpot budget ({self.max_requests} requests per "
                    f"{self.window:g}s, shared by all workers) is used up",
                    pause,
                    "nurture",
                )
            time.sleep(pause)
