"""Shared fixtures: a real Redis of our own (never the developer's), settings pointing
at the shipped sequences and a temporary outbox, and runtimes with a manual clock.

Queue mode: a test module that sets ``INLINE_QUEUE = True`` gets harnesses on
dramatiq's ``StubBroker`` whose messages run inline (no worker threads; see
tests/harness.py); others get a ``RedisBroker`` and real workers.

Catalog: loading and checking the shipped catalog takes most of a domain test's time,
so harnesses of inline modules share one loaded from a session copy of the shipped
files, unless the test takes ``catalog_dirs`` itself (to edit it), its module sets
``EDITS_CATALOG = True``, or it overrides a setting the catalog reads.

Speed: tests that run real worker threads, subprocesses, uvicorn or chaos are marked
``slow`` here (see :func:`pytest_collection_modifyitems`), so ``pytest -m "not slow"``
is the quick domain subset.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from tests.harness import Harness
from worker.catalog import LiveCatalog
from worker.clock import ManualClock
from worker.redis_server import RedisProcess, start_redis
from worker.runtime import Runtime, Tuning
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Monday 23 November 2026, 09:00 UTC (10:00 in Copenhagen): inside business hours.
MONDAY_9AM = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


#: Folders and modules whose tests all start servers, subprocesses or chaos.
SLOW_PLACES = (
    "chaos",
    "http",
    "scale",
    "test_cli.py",
    "test_benchmarks_smoke.py",
    "test_benchmarks_latency_smoke.py",
    "test_packaging.py",
    "test_operator_errors.py",
    "test_send_test.py",
    "test_first_run.py",
    "test_dead_letter_commands.py",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full", action="store_true", help="run the chaos tests at their full size"
    )


def _is_slow(item: pytest.Item) -> bool:
    parts = item.path.relative_to(ROOT / "tests").parts
    if any(part in SLOW_PLACES for part in parts):
        return True
    # A harness outside an INLINE_QUEUE module runs real dramatiq workers.
    uses_harness = "make_harness" in getattr(item, "fixturenames", ())
    return uses_harness and not getattr(getattr(item, "module", None), "INLINE_QUEUE", False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests (see the module docstring)."""
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)


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


def copy_catalog(root: Path) -> dict[str, Path]:
    """Copy the shipped sequences, templates and content under ``root``.

    keep-giving sends every four weeks for months after the active sequences; tests of
    the active sequences count every email, so it is left out here and has its own test
    (tests/test_keep_giving.py), which copies it back in.
    """
    dirs = {}
    for name in ("sequences", "templates", "content"):
        target = root / name
        shutil.copytree(ROOT / name, target)
        dirs[name] = target
    (dirs["sequences"] / "keep-giving.yaml").unlink()
    return dirs


@pytest.fixture
def catalog_dirs(tmp_path: Path) -> dict[str, Path]:
    """Copies of the shipped sequences, templates and content a test may edit."""
    return copy_catalog(tmp_path)


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
def cli_env(redis_url: str, catalog_dirs: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    """The environment of a ``nurture`` command run as a subprocess: this test's Redis and
    catalog copy, an outbox in ``tmp_path``, a sender and postal address, and none of the
    developer's own ``NURTURE_*`` variables. Tests change it in place as they need."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(
        {
            "NURTURE_REDIS_URL": redis_url,
            "NURTURE_SEQUENCES_DIR": str(catalog_dirs["sequences"]),
            "NURTURE_TEMPLATES_DIR": str(catalog_dirs["templates"]),
            "NURTURE_CONTENT_DIR": str(catalog_dirs["content"]),
            "NURTURE_OUTBOX_DIR": str(tmp_path / "outbox"),
            "NURTURE_FROM_EMAIL": "hello@nurture.example",
            "NURTURE_POSTAL_ADDRESS": "Vesterbrogade 1, 1620 København V",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def nurture(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``nurture ARGS`` as an operator does (a new process), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


#: Settings the catalog is loaded with: a test overriding one gets its own catalog.
CATALOG_SETTINGS = frozenset({"sequences_dir", "templates_dir", "content_dir", "default_locale"})


@pytest.fixture(scope="session")
def shipped_catalog(tmp_path_factory: pytest.TempPathFactory) -> LiveCatalog:
    """The shipped catalog, loaded once from a session copy nobody edits."""
    dirs = copy_catalog(tmp_path_factory.mktemp("shipped"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        sequences_dir=dirs["sequences"],
        templates_dir=dirs["templates"],
        content_dir=dirs["content"],
    )
    return LiveCatalog(settings)


@pytest.fixture
def make_harness(
    make_settings: Callable[..., Settings],
    request: pytest.FixtureRequest,
    shipped_catalog: LiveCatalog,
) -> Iterator[Callable[..., Harness]]:
    """Make harnesses; inline queue in modules with ``INLINE_QUEUE = True``."""
    made: list[Harness] = []
    inline = bool(getattr(request.module, "INLINE_QUEUE", False))
    may_share = (
        inline
        and "catalog_dirs" not in inspect.signature(request.function).parameters
        and not getattr(request.module, "EDITS_CATALOG", False)
    )

    def make(
        *, clock: ManualClock | None = None, tuning: Tuning | None = None, **overrides: Any
    ) -> Harness:
        settings = make_settings(**overrides)
        clock = clock or ManualClock(MONDAY_9AM)
        broker = StubBroker() if inline else None  # type: ignore[no-untyped-call]
        shared = may_share and not CATALOG_SETTINGS & overrides.keys()
        runtime = Runtime(
            settings,
            clock=clock,
            tuning=tuning,
            broker=broker,
            catalog=shipped_catalog if shared else None,
        )
        harness = Harness(runtime, clock, settings.outbox_dir)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()
        harness.rt.close()
