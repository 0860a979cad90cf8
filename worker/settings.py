"""Settings from the environment (prefix ``NURTURE_``) and a ``.env`` file.

Nothing else in the package reads the environment.
"""

from __future__ import annotations

import ipaddress
import re
import tempfile
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.addresses import sendable_address
from worker.broker import HEARTBEAT_TIMEOUT_MS, MAINTENANCE_CHANCE, broker_kind
from worker.content import language_tag
from worker.errors import SettingsError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_seconds(text: str) -> float:
    """Parse ``"48h"``, ``"90s"``, ``"0s"`` or a bare number of seconds.

    Raises:
        ValueError: When the text is not a number followed by ms, s, m, h or d.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, e.g. 48h or 30m")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _seconds(value: object) -> object:
    return parse_duration_seconds(value) if isinstance(value, str) else value


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _targets(value: object) -> object:
    """``name=url,name=url`` -> {name: url}."""
    if not isinstance(value, str):
        return value
    out: dict[str, str] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not re.match(r"^https?://[^/\s]+", url.strip()):
            raise ValueError(
                f"{part!r} is not name=URL; write e.g. crm-tasks=https://crm.example.com/hook"
            )
        out[name.strip()] = url.strip()
    return out


#: Seconds, written in the environment as ``48h``, ``90s``, ``1.5m`` or a bare number.
Duration = Annotated[float, BeforeValidator(_seconds)]
#: Secrets, written in the environment comma-separated (``old-secret,new-secret``).
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_comma_list)]
#: Webhook targets, written ``crm-tasks=https://crm.example.com/hook,other=https://...``.
Targets = Annotated[dict[str, str], NoDecode, BeforeValidator(_targets)]


class Settings(BaseSettings):
    """Every setting of the worker, CLI and HTTP service."""

    model_config = SettingsConfigDict(
        env_prefix="NURTURE_", env_file=".env", extra="ignore", frozen=True
    )

    redis_url: str | None = None
    # Queues on RabbitMQ (amqp://user:password@host:5672/vhost, nodes separated by ';')
    # or on a Redis of their own; unset: the queues live in NURTURE_REDIS_URL.
    broker_url: str | None = None
    # RabbitMQ only: declare quorum queues (replicated); false for classic queues.
    broker_quorum_queues: bool = True
    # dramatiq's Redis broker only: a worker process silent this long is taken for dead
    # and its unacknowledged messages are requeued by the next maintenance run on their
    # queue, which a fetch or enqueue starts with this chance in a million
    # (worker/broker.py says why these defaults: recovery in ~15-20 s).
    broker_heartbeat_timeout: Duration = Field(default=HEARTBEAT_TIMEOUT_MS / 1000, ge=1.0)
    broker_maintenance_chance: int = Field(default=MAINTENANCE_CHANCE, ge=1, le=1_000_000)
    # NURTURE_REDIS_URL names a node of a Redis Cluster (the client finds the others);
    # the queues must then be elsewhere (NURTURE_BROKER_URL).
    redis_cluster: bool = False
    # Lead buckets: schedule shards, claims and counters (docs/scale-notes.md). Fixed at
    # install: the state's layout records it and a worker set otherwise refuses to start.
    state_shards: int = Field(default=256, ge=1, le=16384)
    sequences_dir: Path = Path("./sequences")
    templates_dir: Path = Path("./templates")
    content_dir: Path = Path("./content")
    delivery: Literal["outbox", "sendgrid"] = "outbox"
    outbox_dir: Path = Path("./outbox")
    sendgrid_api_key: SecretStr | None = None
    sendgrid_host: str = "https://api.sendgrid.com"
    # Requests to SendGrid in flight at once per worker process (benchmarks/delivery.py).
    sendgrid_concurrency: int = Field(default=128, ge=1, le=1024)
    # An agreed fixed rate (sends per second, shared by every worker); unset: only
    # SendGrid's own X-RateLimit-* answers and 429s pace the sends.
    sendgrid_max_rate: float | None = Field(default=None, gt=0)
    # SendGrid Event Webhook verification key (base64 ECDSA public key).
    sendgrid_webhook_public_key: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    # Where replies go when neither the lead's owner nor the sequence names someone.
    reply_to: str | None = None
    # The person who signs (templates' `sender`), unless the lead's owner is known.
    sender_name: str | None = None
    sender_title: str | None = None
    meeting_url: str | None = None
    # SendGrid's sandbox mode: requests are validated but nothing is delivered (staging).
    sendgrid_sandbox: bool = False
    # An address that unsubscribes whoever writes to it: added to List-Unsubscribe as a
    # mailto: next to the https link (RFC 2369).
    unsubscribe_mailbox: str | None = None
    postal_address: str | None = None
    # notify: steps go to the lead's owner; this address when the lead has none.
    notify_to: str | None = None
    # The language of notify: steps' emails unless the step says `locale:`; unset:
    # NURTURE_DEFAULT_LOCALE (never the lead's: the email is for someone inside).
    notify_locale: str | None = None
    # webhook: steps: the key of their HMAC-SHA256 signature, and named targets.
    webhook_secret: SecretStr | None = None
    webhook_targets: Targets = Field(default_factory=dict)
    # How long a webhook POST may take before it counts as failed (and is retried).
    webhook_timeout: Duration = 10.0
    public_url: str = "http://localhost:8000"
    webhook_secrets: SecretList = Field(default_factory=list)
    # Signs unsubscribe tokens; when unset a random one is made once and kept in Redis.
    unsubscribe_secret: SecretStr | None = None
    default_timezone: str = "UTC"
    default_locale: str = "en"
    frequency_cap: Duration = 48 * 3600.0
    # Where the embedded Redis keeps its files when NURTURE_REDIS_URL is unset.
    state_dir: Path = Path("./.nurture")
    # Worker tuning.
    worker_threads: int = Field(default=8, ge=1, le=256)
    scheduler_interval: Duration = 0.2
    scheduler_batch: int = Field(default=50, ge=1, le=10_000)
    # Touches more overdue than this when found (e.g. after downtime) are re-spread
    # instead of fired at once; see README "Catch-up after downtime".
    catchup_after: Duration = 3600.0
    catchup_spread: Duration = 3600.0
    # While delivery is paused by an account fault (revoked key...), how often one worker
    # checks whether the account works again (SendGrid: GET /v3/scopes).
    pause_probe_interval: Duration = 15.0
    # A claimed touch not finished within this lease is offered again (crash recovery).
    claim_lease: Duration = 300.0
    # A send reserved longer ago than this without an outcome was cut off by a crash:
    # it is recorded as outcome-unknown, never resent blindly.
    send_timeout: Duration = 120.0
    # Where the CRM webhook field mappings (crm/hubspot.yaml, ...) live.
    crm_dir: Path = Path("./crm")
    # Optional: accept HubSpot's own v3 signature / Pipedrive's basic auth (user:password).
    hubspot_client_secret: SecretStr | None = None
    # HubSpot's CRM API: a private-app or service-key token with crm.objects.contacts.read,
    # and the API base URL (a stand-in's in tests).
    hubspot_token: SecretStr | None = None
    # Optional: the key a HubSpot workflow "Send a webhook" action sends with
    # authentication type "API key" (header X-Nurture-Key; docs/crm.md).
    hubspot_workflow_key: SecretStr | None = None
    hubspot_api_url: str = "https://api.hubapi.com"
    pipedrive_webhook_auth: SecretStr | None = None
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"

    @field_validator("default_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}, e.g. Europe/Copenhagen") from exc
        return value

    @field_validator("from_email", "reply_to", "unsubscribe_mailbox", "notify_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        # Checked at start-up, not at the first send: every email would be refused.
        if value is None or not value.strip():
            return None
        return sendable_address(value.strip())

    @field_validator("notify_locale")
    @classmethod
    def _notify_locale(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        found = language_tag(value)
        if found is None:
            raise ValueError(
                f"{value!r} is not a language code; write an ISO 639-1 code, optionally "
                "with a region: da, da-DK"
            )
        return found

    @field_validator("meeting_url")
    @classmethod
    def _meeting_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().startswith("https://"):
            raise ValueError(f"{value!r} is not an https:// link; write the whole booking link")
        return value.strip()

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        try:
            broker_kind(value)
        except SettingsError as exc:
            # The message shows the URL with its password masked (redact_url).
            raise ValueError(str(exc).removeprefix("NURTURE_BROKER_URL: ")) from None
        return value.strip()

    @field_validator("sendgrid_host", "public_url", "hubspot_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    def require_sending(self) -> None:
        """Check the settings a sending worker needs.

        Raises:
            SettingsError: Naming the first missing variable.
        """
        for name in ("from_email", "postal_address"):
            if not getattr(self, name):
                raise SettingsError(
                    f"NURTURE_{name.upper()} is required for sending; "
                    "set it in the environment or .env"
                )
        if self.delivery == "sendgrid" and not self.sendgrid_api_key:
            raise SettingsError(
                "NURTURE_SENDGRID_API_KEY is required when NURTURE_DELIVERY=sendgrid"
            )
        if self.delivery == "sendgrid":
            self._require_real_sender()
        if self.delivery == "outbox":
            self._check_outbox()

    def _check_outbox(self) -> None:
        """Create the outbox folder if needed and prove a file can be written there.

        Raises:
            SettingsError: Naming NURTURE_OUTBOX_DIR and why it cannot be used.
        """
        try:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.outbox_dir, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise SettingsError(
                f"NURTURE_OUTBOX_DIR={self.outbox_dir}: cannot write there "
                f"({exc.strerror or exc}); make it writable for this user or point "
                "NURTURE_OUTBOX_DIR at a folder that is"
            ) from None

    def _require_real_sender(self) -> None:
        """What real recipients see must work: an https unsubscribe link on a public
        host (RFC 8058, and the Gmail/Yahoo bulk-sender rules) and a name in From.

        Raises:
            SettingsError: Naming the setting to fix.
        """
        problem = public_url_problem(self.public_url)
        if problem:
            raise SettingsError(
                f"NURTURE_PUBLIC_URL={self.public_url} {problem}: every email's one-click "
                "unsubscribe link starts with it, so recipients could not unsubscribe; "
                "set it to the https address this service is reachable at, e.g. "
                "https://nurture.example.com"
            )
        if not (self.from_name or self.sender_name):
            raise SettingsError(
                "NURTURE_FROM_NAME (or NURTURE_SENDER_NAME) is required when "
                "NURTURE_DELIVERY=sendgrid: an email from a bare address reads as "
                "automated; set the name people know you by, e.g. 'Maria at Acme'"
            )


def public_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the public address in emails, or None when it can.

    Refused: anything but https, and hosts only this machine or network can reach
    (``localhost``, ``*.local``, ``*.internal``, names without a dot, loopback, private,
    link-local and unspecified IP addresses).
    """
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "is not https"
    host = (parts.hostname or "").rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            return f"names a local host ({host})"
        if "." not in host:
            return f"names a host without a domain ({host})"
        return None
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified:
        return f"names a local address ({host})"
    return None


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning validation errors into one line naming the variable.

    Raises:
        SettingsError: When any setting is invalid.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        msg = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"NURTURE_{field.upper()}: {msg}") from None
