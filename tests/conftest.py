"""Shared fixtures: a real Redis of our own (never the developer's), settings pointing
at the shipped sequences and a temporary outbox, and runtimes with a manual clock."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Harness
from worker.clock import ManualClock
from worker.redis_server import RedisProcess, start_redis
from worker.runtime import Runtime, Tuning
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Monday 23 November 2026, 09:00 UTC (10:00 in Copenhagen): inside business hours.
MONDAY_9AM = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full", action="store_true", help="run the chaos tests at their full size"
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server started for this test session on a free port (AOF on, like prod)."""
    server = start_redis(tmp_path_factory.mktemp("redis"), appendonly=True)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session Redis, emptied before each test (it is ours: we started it)."""
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def catalog_dirs(tmp_path: Path) -> dict[str, Path]:
    """Copies of the shipped sequences, templates and content a test may edit."""
    dirs = {}
    for name in ("sequences", "templates", "content"):
        target = tmp_path / name
        shutil.copytree(ROOT / name, target)
        dirs[name] = target
    # keep-giving sends every four weeks for months after the active sequences; tests
    # of the active sequences count every email, so it is left out here and has its
    # own test (tests/test_keep_giving.py), which copies it back in.
    (dirs["sequences"] / "keep-giving.yaml").unlink()
    return dirs


@pytest.fixture
def make_settings(
    redis_url: str, tmp_path: Path, catalog_dirs: dict[str, Path]
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "sequences_dir": catalog_dirs["sequences"],
            "templates_dir": catalog_dirs["templates"],
            "content_dir": catalog_dirs["content"],
            "outbox_dir": tmp_path / "outbox",
            "from_email": "hello@nurture.example",
            "from_name": "Nurture Team",
            "postal_address": "Vesterbrogade 1, 1620 København V, Denmark",
            "public_url": "https://nurture.example",
            "webhook_secrets": ["test-secret"],
            "unsubscribe_secret": "unsubscribe-test-secret",
            "frequency_cap": 0.0,
            "state_dir": tmp_path / ".nurture",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def make_harness(
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(
        *, clock: ManualClock | None = None, tuning: Tuning | None = None, **overrides: Any
    ) -> Harness:
        settings = make_settings(**overrides)
        clock = clock or ManualClock(MONDAY_9AM)
        runtime = Runtime(settings, clock=clock, tuning=tuning)
        harness = Harness(runtime, clock, settings.outbox_dir)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()
        harness.rt.close()
