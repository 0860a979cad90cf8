"""The SendGrid backend keeps one connection per thread, and never trusts a stale one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.delivery.test_delivery_sendgrid import make_message
from tests.sendgrid_standin import SendGridStandIn
from worker.delivery import sendgrid as sendgrid_module
from worker.delivery.sendgrid import SendGridDelivery
from worker.errors import OutcomeUnknownError, SettingsError, TransientDeliveryError


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    with SendGridStandIn(slow_delay=1.0) as server:
        yield server


@pytest.fixture
def delivery(standin: SendGridStandIn) -> Iterator[SendGridDelivery]:
    backend = SendGridDelivery(standin.api_key, standin.url, timeout=0.5)
    yield backend
    backend.close()


def _connects(delivery: SendGridDelivery) -> int:
    assert delivery.transport is not None
    return delivery.transport.connects


def test_one_connection_carries_many_messages(
    delivery: SendGridDelivery, standin: SendGridStandIn
) -> None:
    ids = {delivery.send(make_message(key=f"k{i}")).provider_id for i in range(5)}
    assert len(ids) == 5 and None not in ids
    assert len(standin.messages) == 5
    assert _connects(delivery) == 1


def test_each_thread_has_its_own_connection(
    delivery: SendGridDelivery, standin: SendGridStandIn
) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            for i in range(5):
                delivery.send(make_message(key=f"t{n}.{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(standin.messages) == 20
    assert _connects(delivery) == 4


def test_connection_closed_by_the_server_is_not_reused(
    delivery: SendGridDelivery, standin: SendGridStandIn
) -> None:
    delivery.send(make_message(key="before"))
    assert standin.cut_connections() == 1
    time.sleep(0.05)  # let the FIN arrive
    result = delivery.send(make_message(key="after"))  # no outcome-unknown: a new connection
    assert result.provider_id
    assert [m.custom_args["lead_id"] for m in standin.messages] == ["crm-1042", "crm-1042"]
    assert _connects(delivery) == 2


def test_idle_connection_is_replaced(
    delivery: SendGridDelivery, standin: SendGridStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sendgrid_module, "MAX_IDLE_REUSE", 0.0)
    delivery.send(make_message(key="a"))
    time.sleep(0.01)
    delivery.send(make_message(key="b"))
    assert _connects(delivery) == 2
    assert len(standin.messages) == 2


def test_connection_is_dropped_after_a_lost_answer(
    delivery: SendGridDelivery, standin: SendGridStandIn
) -> None:
    standin.script(["slow"])  # answers after 1 s, past the 0.5 s timeout
    with pytest.raises(OutcomeUnknownError, match="no complete answer"):
        delivery.send(make_message(key="slow"))
    # The late answer must not be read as the next message's answer.
    time.sleep(0.7)
    standin.script([400])
    with pytest.raises(Exception, match="400"):
        delivery.send(make_message(key="refused"))
    assert delivery.send(make_message(key="next")).provider_id
    assert _connects(delivery) == 2  # a new one after the timeout; the 400 kept it


def test_error_answers_keep_the_connection(
    delivery: SendGridDelivery, standin: SendGridStandIn
) -> None:
    standin.script([429, 500])
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            delivery.send(make_message())
    assert delivery.send(make_message()).provider_id
    assert _connects(delivery) == 1


def test_refused_connection_is_transient(standin: SendGridStandIn) -> None:
    url = standin.url
    standin.stop()
    backend = SendGridDelivery("SG.test", url, timeout=0.5)
    with pytest.raises(TransientDeliveryError, match="connection refused"):
        backend.send(make_message())


def test_behind_a_proxy_the_library_transport_is_used(
    standin: SendGridStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    backend = SendGridDelivery(standin.api_key, standin.url, timeout=0.5)
    assert backend.transport is None
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        backend.send(make_message())  # urllib went to the proxy, not to the stand-in
    assert standin.messages == []


@pytest.mark.parametrize("host", ["ftp://api.sendgrid.com", "api.sendgrid.com", "http://"])
def test_host_must_be_an_http_url(host: str) -> None:
    with pytest.raises(SettingsError, match="NURTURE_SENDGRID_HOST"):
        SendGridDelivery("SG.test", host)
