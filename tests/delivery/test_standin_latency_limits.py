"""The stand-in's latency option and SendGrid's rate-limit headers.

Rate-limit format from SendGrid's documentation,
https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits:
every answer carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (unix seconds); beyond the limit the answer is ``429`` with
``{"errors": [{"field": null, "message": "too many requests"}]}``.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.delivery.test_delivery_standin import Client, valid_payload
from tests.sendgrid_standin import Latency, SendGridStandIn


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as sg:
        yield sg


def test_fixed_latency_delays_each_answer_and_overlaps_across_connections(
    standin: SendGridStandIn,
) -> None:
    standin.latency(0.2)
    client = Client(standin.port)
    started = time.monotonic()
    assert client.send(valid_payload())[0] == 202
    assert 0.19 <= time.monotonic() - started < 0.6

    # Eight connections at once: the delays overlap (one server thread per connection).
    statuses: list[int] = []
    clients = [Client(standin.port) for _ in range(8)]
    threads = [
        threading.Thread(target=lambda c=c: statuses.append(c.send(valid_payload())[0]))
        for c in clients
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 8
    assert time.monotonic() - started < 0.8  # not 8 x 0.2 s
    assert standin.accepted == 9

    standin.latency(0)
    started = time.monotonic()
    assert client.send(valid_payload())[0] == 202
    assert time.monotonic() - started < 0.15


def test_lognormal_latency_has_the_asked_median_and_p95() -> None:
    latency = Latency(0.15, p95=0.4, seed=7)
    draws = sorted(latency.draw() for _ in range(20_000))
    assert statistics.median(draws) == pytest.approx(0.15, rel=0.05)
    assert draws[int(0.95 * len(draws))] == pytest.approx(0.4, rel=0.07)
    assert min(draws) > 0
    assert Latency(0.1).draw() == 0.1  # no p95: fixed
    with pytest.raises(ValueError):
        Latency(0.3, p95=0.1)


def test_rate_limit_headers_count_down_then_429_as_documented(standin: SendGridStandIn) -> None:
    standin.rate_limit(3, period=3600)  # one window for the whole test
    client = Client(standin.port)
    remaining = []
    for _ in range(3):
        status, headers, _ = client.send(valid_payload())
        assert status == 202
        assert headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(headers["X-RateLimit-Remaining"]))
        reset = int(headers["X-RateLimit-Reset"])
        assert reset % 3600 == 0 and time.time() < reset <= time.time() + 3600
    assert remaining == [2, 1, 0]

    status, headers, body = client.send(valid_payload())
    assert status == 429
    assert body == {"errors": [{"field": None, "message": "too many requests"}]}
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Reset"]) == reset
    assert standin.accepted == 3  # the refused message was not accepted
    assert standin.stats()["rate_limited"] == 1


def test_rate_limit_window_starts_again_after_reset(standin: SendGridStandIn) -> None:
    standin.rate_limit(2, period=1)
    client = Client(standin.port)
    # Start at the beginning of a window so the three sends share it.
    time.sleep(1 - time.time() % 1 + 0.01)
    assert [client.send(valid_payload())[0] for _ in range(3)] == [202, 202, 429]
    time.sleep(1 - time.time() % 1 + 0.01)
    status, headers, _ = client.send(valid_payload())
    assert (status, headers["X-RateLimit-Remaining"]) == (202, "1")
    standin.rate_limit(None)
    status, headers, _ = client.send(valid_payload())
    assert status == 202 and "X-RateLimit-Limit" not in headers


def test_control_endpoints_set_latency_and_rate_limit(standin: SendGridStandIn) -> None:
    def post(path: str, body: object) -> object:
        request = urllib.request.Request(
            standin.url + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    assert post("/_standin/latency", {"median": 0.2, "p95": 0.3, "seed": 1}) == {"ok": True}
    assert post("/_standin/rate_limit", {"limit": 100, "period": 60}) == {"ok": True}
    client = Client(standin.port)
    started = time.monotonic()
    status, headers, _ = client.send(valid_payload())
    assert status == 202 and headers["X-RateLimit-Limit"] == "100"
    assert time.monotonic() - started >= 0.1
    standin.reset()  # back to a fresh stand-in: no latency, no limit
    started = time.monotonic()
    status, headers, _ = client.send(valid_payload())
    assert status == 202 and "X-RateLimit-Limit" not in headers
    assert time.monotonic() - started < 0.1
