"""Fixtures for the chaos tests: the size switch, the SendGrid stand-in, the catalog
copy with the chaos sequence, and `nurture` subprocesses that are always reaped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.procs import Procs, install_chaos_sequence
from tests.cluster import redis_cluster, redis_cluster_server
from tests.harness import Harness
from tests.rabbitmq import amqp, amqp_vhost, app_queues, rabbitmq_node
from tests.sendgrid_standin import SendGridStandIn


@pytest.fixture
def full_size(request: pytest.FixtureRequest) -> bool:
    """True with ``--chaos-full``: run at the issue's full size."""
    return bool(request.config.getoption("--chaos-full"))


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as server:
        yield server


@pytest.fixture
def chaos_catalog(catalog_dirs: dict[str, Path]) -> dict[str, Path]:
    """The catalog copy with the chaos sequence (trigger chaos.start; steps 0s, 1s)."""
    install_chaos_sequence(catalog_dirs)
    return catalog_dirs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start `nurture` subprocesses; any still running at the end is killed."""
    work = tmp_path / "procs"
    work.mkdir()
    started = Procs(work)
    yield started
    started.close()


@pytest.fixture
def sendgrid_harness(
    make_harness: Callable[..., Harness],
    chaos_catalog: dict[str, Path],
    standin: SendGridStandIn,
) -> Harness:
    """An in-process harness (manual clock, real dramatiq workers on the test Redis)
    with the chaos sequence, delivering through SendGrid to the stand-in."""
    return make_harness(
        delivery="sendgrid", sendgrid_api_key=standin.api_key, sendgrid_host=standin.url
    )


__all__ = [
    "amqp",
    "amqp_vhost",
    "app_queues",
    "rabbitmq_node",
    "redis_cluster",
    "redis_cluster_server",
]
