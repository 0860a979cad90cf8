"""The SendGrid backend: one v3 Mail Send request (``POST /v3/mail/send``) per message.

The official ``sendgrid`` library configures the client (API key, host, its
``Authorization``/``User-Agent``/``Accept`` headers); ``NURTURE_SENDGRID_HOST`` points it
at a stand-in in tests. The library's own transport (``python_http_client`` on
``urllib``) opens a new connection and builds a new ``urllib`` opener for every request,
which the benchmarks measured as the largest single CPU cost of a send. So each worker
thread keeps one HTTP/1.1 keep-alive connection to the host (:class:`KeepAliveTransport`)
and sends the library's request on it. When a proxy is configured for the host in the
environment (``HTTPS_PROXY`` and friends) the library's ``urllib`` transport is used as
is, since it knows how to go through the proxy.

Failures are classified, never retried here (the queue actor owns retries):

========================================  ==========================================
what happened                             raised
========================================  ==========================================
202/200                                   ``SendResult(provider_id=X-Message-Id)``
429                                       ``TransientDeliveryError`` with
                                          ``retry_after`` from ``X-RateLimit-Reset``
                                          (else ``Retry-After``), 1..3600 s
408, 5xx, other non-2xx                   ``TransientDeliveryError``
401, 403                                  ``AccountFaultError``: the key, the
                                          credits or the sender identity is wrong
                                          (an account fault: delivery pauses)
other 4xx (400, 413, ...)                 ``PermanentDeliveryError`` with SendGrid's
                                          error messages
refused, DNS, TLS, connect timeout —      ``TransientDeliveryError``: the request
anything before the request was sent      never left, so it cannot have been accepted
timeout or dropped connection while       ``OutcomeUnknownError``: SendGrid may have
waiting for the answer                    accepted the message
========================================  ==========================================

Waiting overlapped: a real account answers in 100-300 ms, so one request at a time per
worker thread leaves the CPU idle. :meth:`SendGridDelivery.send_many` sends a batch over
a bounded pool of threads (``concurrency``), each with its own kept-alive connection,
and reports every message's outcome on its own, exactly as :meth:`~SendGridDelivery.send`
would have (benchmarks/delivery.py measures the choice against the stand-in).

Rate limits: with a :class:`~worker.store.ratelimit.RateLimiter`, every request first takes a
turn from the limiter shared by all processes in Redis, and every answer's
``X-RateLimit-*`` headers and 429s go back into it. A turn not available within
``limiter_wait`` seconds raises ``TransientDeliveryError`` with ``retry_after`` (nothing
was sent), so no thread is parked for a whole rate-limit period.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient

from worker.delivery.base import (
    ONE_CLICK,
    Delivery,
    Message,
    SendResult,
    header_safe,
    list_unsubscribe,
    send_each,
)
from worker.errors import (
    AccountFaultError,
    DeliveryError,
    OutcomeUnknownError,
    PermanentDeliveryError,
    SettingsError,
    TransientDeliveryError,
)
from worker.store.ratelimit import RateLimiter

DEFAULT_HOST = "https://api.sendgrid.com"
#: Seconds to wait for connect and for each read; beyond it the outcome is unknown.
DEFAULT_TIMEOUT = 10.0
#: Bounds for a provider-requested wait (seconds).
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 3600.0
#: SendGrid accepts at most 10 categories per message.
MAX_CATEGORIES = 10
#: A kept-alive connection idle longer than this is closed instead of reused: servers
#: close idle connections after a while, and a request written into a connection the
#: server is closing gets no answer, which would count as an outcome-unknown send.
MAX_IDLE_REUSE = 4.0
#: Requests in flight at once per process in :meth:`SendGridDelivery.send_many`: enough
#: to keep the CPU busy while SendGrid takes ~150 ms per answer (see
#: benchmarks/delivery.py), few enough to stay well inside the file-descriptor limit.
DEFAULT_CONCURRENCY = 128
#: Answers that concern the account, not the message: SendGrid's documented 401s ("The
#: provided authorization grant is invalid, expired, or revoked", "Maximum credits
#: exceeded", "Authenticated user is not authorized to send mail") and 403s ("access
#: forbidden" for a key without Mail Send, "The from address does not match a verified
#: Sender Identity"); see
#: https://support.sendgrid.com/hc/en-us/articles/18322114821403-4XX-API-Errors-and-Troubleshooting-Suggestions,
#: https://www.twilio.com/docs/api/errors/60604 and https://twilio.com/docs/api/errors/60222.
#: A 400 names one message's mistake (a bad address) and stays a per-message refusal.
ACCOUNT_FAULT_STATUSES = frozenset({401, 403})
#: How a sender-identity fault reads (the 403 of mail send; SMTP's wording on
#: https://twilio.com/docs/sendgrid/for-developers/sending-email/smtp-errors-and-troubleshooting).
SENDER_FAULT_TEXTS = ("verified Sender Identity", "not authorized to send from")
#: Appended to a sender-identity fault's text, with the address and a ``]``.
SENDER_MARK = "[from "
#: Paging of the lists the probe reads.
PAGE_SIZE = 100
MAX_PAGES = 50


def is_sender_fault(text: str) -> bool:
    """Whether an account fault is about the sender identity (the from address)."""
    return any(part.lower() in text.lower() for part in SENDER_FAULT_TEXTS)


def sender_of(reason: str) -> str | None:
    """The address a sender-identity fault names (:data:`SENDER_MARK`), else None."""
    if not is_sender_fault(reason) or SENDER_MARK not in reason:
        return None
    address = reason.rpartition(SENDER_MARK)[2].partition("]")[0].strip()
    return address or None


#: SendGrid's scope that lets a key send mail (GET /v3/scopes lists the key's scopes).
MAIL_SEND_SCOPE = "mail.send"
#: Longest wait for a rate-limiter turn before the message is given back to the queue.
DEFAULT_LIMITER_WAIT = 5.0

# python_http_client logs every request's headers, Authorization included, at DEBUG.
# Cap it at INFO so turning on debug logging never writes the API key into the logs;
# an operator who sets this logger's level explicitly still wins.
log = logging.getLogger(__name__)
_http_log = logging.getLogger("python_http_client")
if _http_log.level == logging.NOTSET:
    _http_log.setLevel(logging.INFO)


class Headers(Protocol):
    """Response headers: a case-insensitive lookup (``HTTPMessage``, a dict in tests)."""

    def get(self, name: str, /) -> str | None: ...


def build_payload(message: Message, *, sandbox: bool = False) -> dict[str, Any]:
    """Build the v3 Mail Send JSON body for one message.

    ``text/plain`` content comes first and ``text/html`` second: SendGrid refuses any
    other order. Lead, sequence and step travel as ``custom_args``, which SendGrid
    echoes in every Event Webhook event for this message.

    ``tracking_settings`` are always explicit, so the account's defaults never decide:
    open and click tracking as the sequence says (off unless it opts in; click tracking
    never rewrites plain-text links), and SendGrid's own subscription tracking always
    off, since every email carries the worker's unsubscribe link already.

    Args:
        message: The message.
        sandbox: SendGrid's sandbox mode: the request is checked, nothing is delivered.

    Returns:
        A JSON-serialisable dict.
    """
    recipient: dict[str, str] = {"email": message.to_email}
    if message.to_name:
        recipient["name"] = header_safe(message.to_name)
    sender: dict[str, str] = {"email": message.from_email}
    if message.from_name:
        sender["name"] = header_safe(message.from_name)
    content = [{"type": "text/plain", "value": message.text}]
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    payload: dict[str, Any] = {
        "personalizations": [{"to": [recipient]}],
        "from": sender,
        "subject": header_safe(message.subject),
        "content": content,
        "headers": {
            "List-Unsubscribe": list_unsubscribe(message),
            "List-Unsubscribe-Post": ONE_CLICK,
        },
        "custom_args": {
            "lead_id": message.lead_id,
            "sequence": message.sequence,
            "step": message.step,
        },
        "tracking_settings": {
            "click_tracking": {"enable": message.track_clicks, "enable_text": False},
            "open_tracking": {"enable": message.track_opens},
            "subscription_tracking": {"enable": False},
        },
    }
    if message.internal:
        # To a person inside about the lead: no unsubscribe headers, and none of the
        # lead's custom_args, so its opens and bounces never count as the lead's.
        del payload["headers"]
        payload["custom_args"] = {"internal": "notify"}
    if message.reply_to_email:
        reply_to = {"email": message.reply_to_email}
        if message.reply_to_name:
            reply_to["name"] = header_safe(message.reply_to_name)
        payload["reply_to"] = reply_to
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    if message.generation and not message.internal:
        payload["custom_args"]["generation"] = str(message.generation)
    if message.variant:
        payload["custom_args"]["variant"] = message.variant
    if message.categories:
        # Duplicates would only waste SendGrid's 10-category limit.
        payload["categories"] = list(dict.fromkeys(message.categories))[:MAX_CATEGORIES]
    return payload


def retry_after_seconds(headers: Headers | None, now: float | None = None) -> float | None:
    """Read how long the provider asked us to wait.

    ``X-RateLimit-Reset`` (unix seconds, what SendGrid sends) wins over ``Retry-After``
    (delta seconds or an HTTP date). The result is clamped to 1..3600 s so a skewed
    clock or a bogus header can neither cause a hot loop nor park a message for days.

    Args:
        headers: The response headers (case-insensitive mapping), if any.
        now: The current unix time; ``time.time()`` when omitted.

    Returns:
        Seconds to wait, or None when no usable header was present.
    """
    if headers is None:
        return None
    current = time.time() if now is None else now
    wait: float | None = None
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            wait = float(reset) - current
        except ValueError:
            wait = None
    if wait is None:
        retry = headers.get("Retry-After")
        if retry:
            try:
                wait = float(retry)
            except ValueError:
                try:
                    wait = parsedate_to_datetime(retry).timestamp() - current
                except (TypeError, ValueError):
                    wait = None
    if wait is None or wait != wait:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, wait))


def error_messages(body: bytes | str | None) -> str:
    """Extract SendGrid's error messages from a response body.

    SendGrid answers ``{"errors": [{"message": ..., "field": ..., "help": ...}]}``; the
    messages are joined with ``"; "``, each followed by its field when it names one.
    Anything else is returned as (at most 300 characters of) text.
    """
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    if not isinstance(errors, list):
        return text.strip()[:300]
    parts: list[str] = []
    for item in errors:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message") or "").strip()
        field = item.get("field")
        if message and field:
            parts.append(f"{message} (field: {field})")
        elif message:
            parts.append(message)
    return "; ".join(parts) if parts else text.strip()[:300]


def classify_status(
    status: int, headers: Headers | None, body: bytes | str | None
) -> DeliveryError:
    """Turn a non-2xx answer into the matching delivery error.

    Args:
        status: HTTP status code.
        headers: Response headers.
        body: Response body.

    Returns:
        The error to raise; its message reads like ``"400: The from address ..."``.
    """
    detail = error_messages(body)
    text = f"{status}: {detail}" if detail else f"{status}: HTTP {status}"
    if status == 429:
        return TransientDeliveryError(
            f"SendGrid rate limit {text}", retry_after=retry_after_seconds(headers)
        )
    if status == 408 or status >= 500 or status < 400:
        # 408/5xx are SendGrid's own trouble; 1xx/3xx are never valid answers to a
        # mail send, most likely a proxy or misconfigured host: not the message's fault.
        return TransientDeliveryError(f"SendGrid {text}", retry_after=retry_after_seconds(headers))
    if status in ACCOUNT_FAULT_STATUSES:
        return AccountFaultError(f"SendGrid {text}")
    return PermanentDeliveryError(f"SendGrid {text}")


class KeepAliveTransport:
    """One kept-alive HTTP/1.1 connection per thread to one host.

    Failures keep the meaning the backend's table gives them: anything before the
    request was completely written raises :class:`TransientDeliveryError`; anything
    after raises :class:`OutcomeUnknownError`. A connection is reused only while it is
    healthy: after any error, a ``Connection: close`` answer, an idle spell longer than
    :data:`MAX_IDLE_REUSE`, or when the server has already closed its side (checked
    before each reuse), the next request opens a new one.
    """

    def __init__(self, host: str, headers: Mapping[str, str], timeout: float) -> None:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                f"NURTURE_SENDGRID_HOST={host!r} is not an http(s) URL; "
                "use e.g. https://api.sendgrid.com"
            )
        self.host = host
        self._https = parts.scheme == "https"
        self._hostname = parts.hostname
        self._port = parts.port
        self._path = (parts.path.rstrip("/") or "") + "/v3/mail/send"
        self._headers = dict(headers)
        self._headers["Content-Type"] = "application/json"
        self.timeout = timeout
        self._local = threading.local()
        self._context = ssl.create_default_context() if self._https else None
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self.connects = 0  # counted for tests and benchmarks

    def post(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """POST ``body`` to ``/v3/mail/send``; returns status, headers and body."""
        conn = self._connection()
        try:
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
            except (http.client.HTTPException, OSError) as exc:
                # Not completely written: the server cannot have accepted it.
                raise TransientDeliveryError(
                    f"SendGrid unreachable at {self.host}: could not send the request: "
                    f"{_describe(exc)}"
                ) from exc
            try:
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError) as exc:
                raise OutcomeUnknownError(
                    f"SendGrid at {self.host}: no complete answer: {exc!r}"
                ) from exc
        except BaseException:
            self._drop(conn)
            raise
        if response.will_close:
            self._drop(conn)
        else:
            self._local.idle_since = time.monotonic()
        return response.status, response.headers, data

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            idle = time.monotonic() - getattr(self._local, "idle_since", 0.0)
            if idle <= MAX_IDLE_REUSE and not _closed_by_peer(conn.sock):
                return conn
            self._drop(conn)
        conn = self._new_connection()
        try:
            conn.connect()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise TransientDeliveryError(
                f"SendGrid unreachable at {self.host}: {_describe(exc)}"
            ) from exc
        self.connects += 1
        self._local.conn = conn
        with self._lock:
            self._all.add(conn)
        return conn

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._hostname, self._port, timeout=self.timeout, context=self._context
            )
        return http.client.HTTPConnection(self._hostname, self._port, timeout=self.timeout)

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._all.discard(conn)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            conn.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle connection's socket is readable: the server closed it (or sent
    something unasked), so it must not carry another request."""
    poller = select.poll()  # not select(): it fails for descriptors over 1023
    poller.register(sock, select.POLLIN)
    try:
        return bool(poller.poll(0))
    except OSError:
        return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connect timed out"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc})"
    return str(exc) or type(exc).__name__


def _proxied(host: str) -> bool:
    """Whether the environment routes requests to ``host`` through a proxy."""
    parts = urlsplit(host)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class SendGridDelivery(Delivery):
    """Sends each message with one v3 Mail Send request.

    Requests go over :class:`KeepAliveTransport` (one kept-alive connection per
    thread). Behind a proxy they go through the library's own ``urllib`` transport; one
    library client then serves all threads, which is safe because ``python_http_client``
    builds a new ``urllib`` opener and request for every call and shares only the
    default-header dict, which it merely reads once ``Content-Type`` is in it (we put it
    there up front, and never pass per-call ``request_headers``, which would mutate it).

    Attributes:
        host: The API base URL.
        timeout: Seconds allowed for connecting and for each read of the answer.
    """

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        host: str = DEFAULT_HOST,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        limiter: RateLimiter | None = None,
        limiter_wait: float = DEFAULT_LIMITER_WAIT,
        sandbox: bool = False,
    ) -> None:
        """Create the backend.

        Args:
            api_key: SendGrid API key (``NURTURE_SENDGRID_API_KEY``).
            host: API base URL (``NURTURE_SENDGRID_HOST``).
            timeout: Seconds for connect and for each read; a timeout while waiting for
                the answer raises :class:`~worker.errors.OutcomeUnknownError`.
            concurrency: Most requests in flight at once in :meth:`send_many` (each on
                its own kept-alive connection).
            limiter: Shared rate limiter; None sends without one.
            limiter_wait: Longest wait for a limiter turn before raising
                :class:`~worker.errors.TransientDeliveryError` with ``retry_after``.
            sandbox: Send every request in SendGrid's sandbox mode
                (``NURTURE_SENDGRID_SANDBOX``): checked by SendGrid, never delivered.

        Raises:
            SettingsError: When the key is empty, the host is not an http(s) URL or
                ``concurrency`` is below 1.
        """
        if not api_key:
            raise SettingsError(
                "NURTURE_SENDGRID_API_KEY is required when NURTURE_DELIVERY=sendgrid"
            )
        if concurrency < 1:
            raise SettingsError(f"SendGrid concurrency must be at least 1, not {concurrency}")
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.concurrency = concurrency
        self.limiter = limiter
        self.limiter_wait = limiter_wait
        self.sandbox = sandbox
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._client = SendGridAPIClient(api_key=api_key, host=self.host)
        http = self._client.client
        # See the class docstring: with Content-Type present the shared header dict is
        # only read, never written, by concurrent calls.
        http.request_headers.setdefault("Content-Type", "application/json")
        http.timeout = timeout
        self.transport: KeepAliveTransport | None = None
        if not _proxied(self.host):
            self.transport = KeepAliveTransport(self.host, http.request_headers, timeout)

    def send(self, message: Message) -> SendResult:
        """Send one message.

        Returns:
            ``SendResult(provider_id=<X-Message-Id>)``.

        Raises:
            TransientDeliveryError: 429 (with ``retry_after``), 408, 5xx, or the request
                could not be sent at all (refused, DNS, TLS, connect timeout).
            PermanentDeliveryError: Any other 4xx, with SendGrid's messages.
            OutcomeUnknownError: The request was sent but no complete answer came back.
        """
        try:
            return self._send(message)
        except AccountFaultError as exc:
            if not is_sender_fault(str(exc)):
                raise
            # Name the address: the probe checks that one, and the operator sees it.
            raise AccountFaultError(f"{exc} {SENDER_MARK}{message.from_email}]") from None

    def _send(self, message: Message) -> SendResult:
        payload = build_payload(message, sandbox=self.sandbox)
        self._take_turn()
        if self.transport is not None:
            try:
                status, headers, body = self.transport.post(json.dumps(payload).encode())
            except OutcomeUnknownError as exc:
                raise OutcomeUnknownError(f"{exc} (message {message.key})") from exc
            self._observe(status, headers)
            if not 200 <= status < 300:
                raise classify_status(status, headers, body)
            provider_id = headers.get("X-Message-Id")
            return SendResult(provider_id=str(provider_id) if provider_id else None)
        return self._send_with_library(payload, message)

    def send_many(self, messages: Sequence[Message]) -> list[SendResult | DeliveryError]:
        """Send a batch with up to ``concurrency`` requests in flight at once.

        Each message is sent exactly as :meth:`send` sends it, on a pool thread with its
        own kept-alive connection; its outcome is reported on its own, in order. The
        pool is shared by every caller in the process, so ``concurrency`` bounds the
        requests (and connections) in flight however many threads call this.

        Args:
            messages: The messages; the caller has reserved each in the ledger.

        Returns:
            One :class:`SendResult` or :class:`~worker.errors.DeliveryError` per
            message: ``TransientDeliveryError`` (not accepted), ``PermanentDeliveryError``
            (refused) or ``OutcomeUnknownError`` (may have been accepted). Never raises
            because of one message.
        """
        if len(messages) <= 1:
            return send_each(self, messages)
        pool = self._executor()
        futures = [pool.submit(self.send, message) for message in messages]
        results: list[SendResult | DeliveryError] = []
        for message, future in zip(messages, futures, strict=True):
            try:
                results.append(future.result())
            except DeliveryError as exc:
                results.append(exc)
            except Exception as exc:  # a bug: we cannot tell whether it got out
                error = OutcomeUnknownError(
                    f"{self.name}: unexpected error for {message.key}: {exc!r}"
                )
                error.__cause__ = exc
                results.append(error)
        return results

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="sendgrid-send"
                )
            return self._pool

    def _take_turn(self) -> None:
        """Wait for the shared rate limiter; nothing has been sent when this raises."""
        if self.limiter is None:
            return
        try:
            wait = self.limiter.acquire(self.limiter_wait)
        except redis.RedisError as exc:
            raise TransientDeliveryError(
                f"SendGrid rate limiter unavailable (Redis): {exc}; the message was not sent"
            ) from exc
        if wait is not None:
            raise TransientDeliveryError(
                f"SendGrid rate limit: next turn in {wait:.1f} s (shared by all workers)",
                retry_after=min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, wait)),
            )

    def _observe(self, status: int, headers: Headers | None) -> None:
        """Report an answer to the shared limiter; the send's outcome never depends on it."""
        if self.limiter is None:
            return
        try:
            self.limiter.observe(status, headers)
        except redis.RedisError as exc:
            log.warning("rate limiter: could not record a SendGrid answer: %s", exc)

    def _send_with_library(self, payload: dict[str, Any], message: Message) -> SendResult:
        try:
            response = self._client.client.mail.send.post(
                request_body=payload, timeout=self.timeout
            )
        except SendGridHTTPError as exc:
            self._observe(int(exc.status_code), exc.headers)
            raise classify_status(int(exc.status_code), exc.headers, exc.body) from None
        except urllib.error.URLError as exc:
            # urllib wraps exactly the errors of connecting and writing the request in
            # URLError. A request that was not completely written cannot have been
            # accepted, so a retry is safe.
            raise TransientDeliveryError(
                f"SendGrid unreachable at {self.host}: {_reason(exc)}"
            ) from exc
        except (http.client.HTTPException, OSError) as exc:
            # Raised while waiting for or reading the answer: the request is out and
            # SendGrid may have queued the message. Only the caller can decide (ledger).
            raise OutcomeUnknownError(
                f"SendGrid at {self.host}: no complete answer for {message.key}: {exc!r}"
            ) from exc
        status = int(response.status_code)
        self._observe(status, response.headers)
        if not 200 <= status < 300:
            # urllib raises for 4xx/5xx; this catches anything odd that slipped through.
            raise classify_status(status, response.headers, response.body)
        provider_id = response.headers.get("X-Message-Id") if response.headers else None
        return SendResult(provider_id=str(provider_id) if provider_id else None)

    def probe(self, reason: str = "") -> str | None:
        """Check, without sending mail, whether the key works (``GET /v3/scopes``) and,
        when the pause was a sender-identity fault, whether that sender is verified now.

        SendGrid answers ``GET /v3/scopes`` with the key's scopes
        (https://twilio.com/docs/sendgrid/api-reference/api-key-permissions/retrieve-a-list-of-scopes-for-which-this-user-has-access),
        or 401 for a revoked key. A 403 "does not match a verified Sender Identity" is
        probed through the Sender Verification and Domain Authentication APIs
        (:meth:`sender_problem`), so delivery does not resume only to pause again.

        Args:
            reason: Why delivery paused; a sender-identity fault names the address.

        Returns:
            None when the key works and may send mail; else what is wrong.
        """
        problem = self._key_problem()
        if problem is not None:
            return problem
        sender = sender_of(reason)
        return self.sender_problem(sender) if sender else None

    def _key_problem(self) -> str | None:
        """What is wrong with the key (``GET /v3/scopes``), None if it may send mail."""
        try:
            response = self._client.client.scopes.get(timeout=self.timeout)
        except SendGridHTTPError as exc:
            return str(classify_status(int(exc.status_code), exc.headers, exc.body))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            return f"SendGrid unreachable at {self.host}: {exc}"
        try:
            scopes = json.loads(response.body or b"{}").get("scopes") or []
        except (ValueError, AttributeError):
            return f"SendGrid at {self.host}: GET /v3/scopes answered something unexpected"
        if MAIL_SEND_SCOPE not in scopes:
            return "SendGrid: the API key lacks the mail.send permission (GET /v3/scopes)"
        return None

    def sender_problem(self, address: str) -> str | None:
        """Whether ``address`` may send now: a verified Single Sender
        (``GET /v3/verified_senders``,
        https://twilio.com/docs/sendgrid/api-reference/sender-verification/get-all-verified-senders)
        or on an authenticated domain (``GET /v3/whitelabel/domains``, ``valid``,
        https://twilio.com/docs/sendgrid/api-reference/domain-authentication/list-all-authenticated-domains).

        Returns:
            None when it is (or when the key may not read these lists: the first send
            after resuming is then the probe); else what is wrong.
        """
        try:
            if any(
                str(item.get("from_email", "")).lower() == address.lower() and item.get("verified")
                for item in self._pages("verified_senders", "results")
            ):
                return None
            domain = address.rpartition("@")[2].lower()
            for item in self._pages("whitelabel/domains", None):
                name = str(item.get("domain", "")).lower()
                if item.get("valid") and name and (domain == name or domain.endswith("." + name)):
                    return None
        except SendGridHTTPError as exc:
            if int(exc.status_code) in ACCOUNT_FAULT_STATUSES:
                log.warning(
                    "SendGrid: the API key may not read Sender Authentication (%s); the "
                    "next send checks the sender %s instead",
                    exc.status_code,
                    address,
                )
                return None
            error = classify_status(int(exc.status_code), exc.headers, exc.body)
            return f"SendGrid: checking the sender {address}: {error}"
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return f"SendGrid unreachable at {self.host}: {exc}"
        return (
            f"SendGrid: the sender {address} is not a verified Sender Identity yet (neither "
            "a verified Single Sender nor on an authenticated domain): verify it in SendGrid "
            "(Settings > Sender Authentication)"
        )

    def _pages(self, path: str, key: str | None) -> Iterator[dict[str, Any]]:
        """The items of a paged SendGrid list (``limit`` and ``offset``/``lastSeenID``)."""
        endpoint = self._client.client._(path)  # python-http-client builds the URL
        seen, last_id = 0, None
        for _page in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if key is None:
                params["offset"] = seen
            elif last_id is not None:
                params["lastSeenID"] = last_id
            response = endpoint.get(query_params=params, timeout=self.timeout)
            body = json.loads(response.body or b"null")
            items = body.get(key) if key is not None and isinstance(body, dict) else body
            if not isinstance(items, list):
                raise ValueError(f"GET /v3/{path} answered something unexpected")
            yield from (item for item in items if isinstance(item, dict))
            seen += len(items)
            if len(items) < PAGE_SIZE:
                return
            last_id = items[-1].get("id") if isinstance(items[-1], dict) else None

    def close(self) -> None:
        """Finish the sends in flight, then close the kept-alive connections."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self.transport is not None:
            self.transport.close()


def _reason(exc: urllib.error.URLError) -> str:
    reason = exc.reason
    return _describe(reason) if isinstance(reason, BaseException) else str(reason)
