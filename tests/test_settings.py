"""Settings: environment variables with the NURTURE_ prefix; one clear line per mistake."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dramatiq.brokers.redis import RedisBroker

from worker.errors import SettingsError
from worker.runtime import Runtime
from worker.settings import Settings, load_settings, parse_duration_seconds


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def test_defaults_follow_the_contract(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.delivery == "outbox"
    assert str(settings.sequences_dir) == "sequences"
    assert settings.sendgrid_host == "https://api.sendgrid.com"
    assert settings.public_url == "http://localhost:8000"
    assert settings.webhook_secrets == []
    assert (settings.default_timezone, settings.default_locale) == ("UTC", "en")
    assert settings.frequency_cap == 48 * 3600


def test_env_and_dotenv_are_read(env: pytest.MonkeyPatch, tmp_path: object) -> None:
    env.setenv("NURTURE_WEBHOOK_SECRETS", "old-secret, new-secret")
    env.setenv("NURTURE_FREQUENCY_CAP", "0s")
    with open(".env", "w") as handle:
        handle.write("NURTURE_DEFAULT_LOCALE=da\nNURTURE_FROM_EMAIL=hej@example.dk\n")
    settings = load_settings()
    assert [s.get_secret_value() for s in settings.webhook_secrets] == ["old-secret", "new-secret"]
    assert settings.frequency_cap == 0
    assert settings.default_locale == "da"
    assert settings.from_email == "hej@example.dk"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NURTURE_DELIVERY", "smtp", "NURTURE_DELIVERY: Input should be 'outbox' or 'sendgrid'"),
        ("NURTURE_DEFAULT_TIMEZONE", "Mars/Base", "NURTURE_DEFAULT_TIMEZONE: unknown IANA"),
        ("NURTURE_FREQUENCY_CAP", "two days", "NURTURE_FREQUENCY_CAP: 'two days' is not a dur"),
        ("NURTURE_SENDGRID_HOST", "api.sendgrid.com", "NURTURE_SENDGRID_HOST: 'api.sendgrid"),
        ("NURTURE_WORKER_THREADS", "0", "NURTURE_WORKER_THREADS: Input should be greater"),
        (
            "NURTURE_BROKER_MAINTENANCE_CHANCE",
            "0",
            "NURTURE_BROKER_MAINTENANCE_CHANCE: Input should be greater",
        ),
        ("NURTURE_BROKER_HEARTBEAT_TIMEOUT", "0.5s", "NURTURE_BROKER_HEARTBEAT_TIMEOUT: Input"),
    ],
)
def test_a_bad_setting_names_the_variable_in_one_line(
    env: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_sending_needs_sender_address_and_key(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="NURTURE_FROM_EMAIL"):
        load_settings().require_sending()
    env.setenv("NURTURE_FROM_EMAIL", "a@example.com")
    with pytest.raises(SettingsError, match="NURTURE_POSTAL_ADDRESS"):
        load_settings().require_sending()
    env.setenv("NURTURE_POSTAL_ADDRESS", "1 Main St")
    load_settings().require_sending()
    env.setenv("NURTURE_DELIVERY", "sendgrid")
    with pytest.raises(SettingsError, match="NURTURE_SENDGRID_API_KEY"):
        load_settings().require_sending()


@pytest.mark.parametrize(
    ("text", "seconds"), [("48h", 172800), ("0s", 0), ("90", 90), ("1.5m", 90), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_seconds(text) == seconds


def test_every_duration_setting_reads_units(env: pytest.MonkeyPatch) -> None:
    env.setenv("NURTURE_CLAIM_LEASE", "5m")
    env.setenv("NURTURE_SCHEDULER_INTERVAL", "200ms")
    env.setenv("NURTURE_CATCHUP_AFTER", "2h")
    env.setenv("NURTURE_SEND_TIMEOUT", "90")
    env.setenv("NURTURE_BROKER_HEARTBEAT_TIMEOUT", "20s")
    settings = load_settings()
    assert settings.broker_heartbeat_timeout == 20
    assert settings.claim_lease == 300
    assert settings.scheduler_interval == pytest.approx(0.2)
    assert settings.catchup_after == 7200
    assert settings.send_timeout == 90
    env.setenv("NURTURE_SEND_TIMEOUT", "soon")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("NURTURE_SEND_TIMEOUT: 'soon' is not a duration")


def test_secrets_are_kept_out_of_reprs_and_logs(env: pytest.MonkeyPatch) -> None:
    env.setenv("NURTURE_SENDGRID_API_KEY", "SG.very-secret")
    env.setenv("NURTURE_UNSUBSCRIBE_SECRET", "unsub-very-secret")
    env.setenv("NURTURE_HUBSPOT_CLIENT_SECRET", "hs-very-secret")
    env.setenv("NURTURE_PIPEDRIVE_WEBHOOK_AUTH", "user:pd-very-secret")
    env.setenv("NURTURE_WEBHOOK_SECRETS", "old-very-secret,new-very-secret")
    settings = load_settings()
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "very-secret" not in shown
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == "SG.very-secret"
    assert settings.pipedrive_webhook_auth is not None
    assert settings.pipedrive_webhook_auth.get_secret_value() == "user:pd-very-secret"


def test_the_broker_settings_reach_dramatiqs_redis_broker(
    make_settings: Callable[..., Settings],
) -> None:
    """The defaults, and the values given, are what the Runtime's RedisBroker uses
    (its ``heartbeat_timeout`` in ms and ``maintenance_chance`` in a million)."""
    for overrides, expected in [
        ({}, (15_000, 50_000)),
        ({"broker_heartbeat_timeout": 30.0, "broker_maintenance_chance": 2_000}, (30_000, 2_000)),
    ]:
        runtime = Runtime(make_settings(**overrides), load_catalog=False)
        try:
            broker = runtime.broker
            assert isinstance(broker, RedisBroker)
            assert (broker.heartbeat_timeout, broker.maintenance_chance) == expected
        finally:
            runtime.close()
