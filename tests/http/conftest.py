"""Fixtures for the HTTP service tests: a live server per test, the CRM mappings."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.harness import Harness
from tests.http.helpers import LiveServer, SendgridSigner
from worker.http.app import create_app
from worker.runtime import Runtime


@pytest.fixture
def serve() -> Iterator[Callable[[Runtime], LiveServer]]:
    """Start ``create_app(runtime)`` on a free loopback port; stopped after the test."""
    servers: list[LiveServer] = []

    def start(runtime: Runtime) -> LiveServer:
        server = LiveServer(create_app(runtime))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def crm_dir(tmp_path: Path) -> Path:
    """A copy of the shipped crm/ mappings a test may edit."""
    target = tmp_path / "crm"
    shutil.copytree(ROOT / "crm", target)
    return target


@pytest.fixture
def harness(make_harness: Callable[..., Harness], crm_dir: Path) -> Harness:
    """A harness (runtime on the test Redis, manual clock) with the CRM mappings."""
    return make_harness(crm_dir=crm_dir)


@pytest.fixture
def live(serve: Callable[[Runtime], LiveServer], harness: Harness) -> LiveServer:
    """The HTTP service of ``harness`` on a loopback port."""
    return serve(harness.rt)


@pytest.fixture(scope="session")
def sendgrid_signer() -> SendgridSigner:
    return SendgridSigner()
