"""The HubSpot contact reader through HubSpot's official client (hubspot-api-client)
against the loopback stand-in (tests/hubspot_standin.py), and the shared rate limiter on
real Redis.

Formats: batch read https://developers.hubspot.com/docs/api/crm/contacts ("Retrieve
contacts", POST /crm/v3/objects/contacts/batch/read, up to 100 inputs); ids not found
answered 207 with an OBJECT_NOT_FOUND error naming them in context.ids
(https://github.com/HubSpot/hubspot-api-php/issues/619); 429 and the
X-HubSpot-RateLimit-* headers https://developers.hubspot.com/docs/api/usage-details.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import ROOT
from tests.hubspot_standin import HubSpotStandIn, Scripted
from worker.crm.hubspot_api import (
    Found,
    Gone,
    HubSpotConfigError,
    HubSpotContacts,
    HubSpotRateLimitedError,
    HubSpotRateLimiter,
    HubSpotUnavailableError,
    retry_after_seconds,
)
from worker.crm.hubspot_fetch import contact_events, mapped_properties
from worker.crm.mapping import load_mapping
from worker.errors import NurtureError, SettingsError
from worker.events import validate_event
from worker.settings import load_settings

PROPS = ["email", "firstname", "lastname"]


@pytest.fixture
def hs() -> Iterator[HubSpotStandIn]:
    with HubSpotStandIn() as standin:
        standin.add_contact("1042", email="ann@example.com", firstname="Ann", lastname=None)
        standin.add_contact("1043", email="bo@example.com", firstname="Bo", lastname="Ek")
        yield standin


@pytest.fixture
def reader(hs: HubSpotStandIn) -> HubSpotContacts:
    return HubSpotContacts(token=hs.token, api_url=hs.url, timeout=2.0)


def test_found_contacts_carry_the_properties_asked_for(
    hs: HubSpotStandIn, reader: HubSpotContacts
) -> None:
    results = reader.read_contacts(["1042", "1043", "1042"], PROPS)
    assert set(results) == {"1042", "1043"}
    ann = results["1042"]
    assert isinstance(ann, Found)
    assert ann.properties["email"] == "ann@example.com"
    assert ann.properties["firstname"] == "Ann"
    assert ann.properties["lastname"] is None
    assert ann.merged_into is None and ann.updated_at is not None
    # One request, with the ids once and the properties always read.
    (body,) = hs.requests
    assert body["inputs"] == [{"id": "1042"}, {"id": "1043"}]
    assert {"hs_object_id", "hs_merged_object_ids", *PROPS} == set(body["properties"])


def test_missing_and_deleted_contacts_are_gone(hs: HubSpotStandIn, reader: HubSpotContacts) -> None:
    hs.delete_contact("1043")
    results = reader.read_contacts(["1042", "1043", "9999"], PROPS)
    assert isinstance(results["1042"], Found)
    for gone in ("1043", "9999"):
        result = results[gone]
        assert isinstance(result, Gone)
        assert "may be deleted or not exist" in result.reason
    # All of them gone: still a 207 naming every id, still per-id results.
    results = reader.read_contacts(["1043", "9999"], PROPS)
    assert all(isinstance(r, Gone) for r in results.values())


def test_a_merged_contact_is_found_as_its_survivor(
    hs: HubSpotStandIn, reader: HubSpotContacts
) -> None:
    hs.merge("1043", "1042")
    results = reader.read_contacts(["1043"], PROPS)
    merged = results["1043"]
    assert isinstance(merged, Found) and merged.merged_into == "1042"
    hs.add_contact("2000", email="cy@example.com")
    hs.merge("2000", "1042", redirect=False)
    assert isinstance(reader.read_contacts(["2000"], PROPS)["2000"], Gone)


def test_more_than_100_ids_are_read_in_batches_of_100(
    hs: HubSpotStandIn, reader: HubSpotContacts
) -> None:
    ids = [str(5000 + n) for n in range(250)]
    for object_id in ids[:200]:
        hs.add_contact(object_id, email=f"p{object_id}@example.com")
    results = reader.read_contacts(ids, ["email"])
    assert [len(r["inputs"]) for r in hs.requests] == [100, 100, 50]
    assert sum(isinstance(r, Found) for r in results.values()) == 200
    assert sum(isinstance(r, Gone) for r in results.values()) == 50


def test_429_is_rate_limited_with_the_seconds_to_wait(
    hs: HubSpotStandIn, reader: HubSpotContacts
) -> None:
    hs.script([429])
    with pytest.raises(HubSpotRateLimitedError) as info:
        reader.read_contacts(["1042"], PROPS)
    # No Retry-After: one window of X-HubSpot-RateLimit-Interval-Milliseconds.
    assert info.value.retry_after == 10.0
    assert info.value.policy == "TEN_SECONDLY_ROLLING"
    hs.script([Scripted(status=429, headers={"Retry-After": "3"})])
    with pytest.raises(HubSpotRateLimitedError) as info:
        reader.read_contacts(["1042"], PROPS)
    assert info.value.retry_after == 3.0
    assert isinstance(info.value, HubSpotUnavailableError | NurtureError)
    # After the wait the same read succeeds (nothing was consumed by the 429s).
    assert isinstance(reader.read_contacts(["1042"], PROPS)["1042"], Found)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(hs: HubSpotStandIn, reader: HubSpotContacts, status: int) -> None:
    hs.script([status])
    with pytest.raises(HubSpotUnavailableError) as info:
        reader.read_contacts(["1042"], PROPS)
    assert not isinstance(info.value, HubSpotRateLimitedError)
    assert str(status) in str(info.value) and "will retry" in str(info.value)


def test_dropped_connection_slow_answer_and_no_server_are_transient(
    hs: HubSpotStandIn, reader: HubSpotContacts
) -> None:
    hs.script(["drop"])
    with pytest.raises(HubSpotUnavailableError, match="did not answer"):
        reader.read_contacts(["1042"], PROPS)
    hs.latency = 0.5
    slow = HubSpotContacts(token=hs.token, api_url=hs.url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(HubSpotUnavailableError, match="did not answer"):
        slow.read_contacts(["1042"], PROPS)
    assert time.monotonic() - started < 2.0  # no hidden retry loop in the client
    hs.latency = 0.1
    assert isinstance(slow.read_contacts(["1042"], PROPS)["1042"], Found)
    nowhere = HubSpotContacts(token=hs.token, api_url="http://127.0.0.1:9", timeout=1.0)
    with pytest.raises(HubSpotUnavailableError, match=r"127\.0\.0\.1:9"):
        nowhere.read_contacts(["1042"], PROPS)


def test_bad_token_and_bad_url_name_the_setting(hs: HubSpotStandIn) -> None:
    wrong = HubSpotContacts(token="pat-wrong", api_url=hs.url)
    with pytest.raises(HubSpotConfigError, match="NURTURE_HUBSPOT_TOKEN") as info:
        wrong.read_contacts(["1042"], PROPS)
    assert not isinstance(info.value, HubSpotUnavailableError)
    hs.script([403])
    with pytest.raises(HubSpotConfigError, match=r"crm\.objects\.contacts\.read"):
        HubSpotContacts(token=hs.token, api_url=hs.url).read_contacts(["1042"], PROPS)
    elsewhere = HubSpotContacts(token=hs.token, api_url=hs.url + "/wrong-prefix")
    with pytest.raises(HubSpotConfigError, match="NURTURE_HUBSPOT_API_URL"):
        elsewhere.read_contacts(["1042"], PROPS)


def test_settings_build_the_reader(hs: HubSpotStandIn) -> None:
    settings = load_settings(hubspot_token=hs.token, hubspot_api_url=hs.url + "/")
    reader = HubSpotContacts.from_settings(settings)
    assert reader.api_url == hs.url
    assert hs.token not in repr(settings)  # SecretStr: never in logs
    assert hs.token not in repr(reader)
    assert isinstance(reader.read_contacts(["1043"], PROPS)["1043"], Found)
    with pytest.raises(SettingsError, match="NURTURE_HUBSPOT_TOKEN"):
        HubSpotContacts.from_settings(load_settings())


def test_retry_after_headers() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0
    assert retry_after_seconds({"x-hubspot-ratelimit-interval-milliseconds": "1000"}) == 1.0
    assert retry_after_seconds({}) == 10.0


# -- the shared limiter (real Redis) --------------------------------------------------


def test_limiter_shares_one_window_across_clients(redis_url: str) -> None:
    clients = [redis.Redis.from_url(redis_url) for _ in range(3)]
    limiters = [HubSpotRateLimiter(c, max_requests=5, window=1.0, max_wait=0.0) for c in clients]
    taken = [lim.try_acquire() for lim in limiters for _ in range(2)]
    assert taken.count(0.0) == 5  # five places in the window, whoever asks
    assert 0 < max(taken) <= 1.0
    with pytest.raises(HubSpotRateLimitedError, match="used up") as info:
        limiters[0].wait()
    assert 0 < info.value.retry_after <= 1.0
    assert all(k.decode().startswith("nurture:hubspot:") for k in clients[0].keys("*"))


def test_limiter_spaces_threads_to_the_limit(redis_url: str, hs: HubSpotStandIn) -> None:
    limiter = HubSpotRateLimiter(redis.Redis.from_url(redis_url), max_requests=4, window=0.5)
    reader = HubSpotContacts(token=hs.token, api_url=hs.url, limiter=limiter)
    started = time.monotonic()
    threads = [
        threading.Thread(target=reader.read_contacts, args=(["1042"], PROPS)) for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started
    assert len(hs.requests) == 12
    # 12 requests at 4 per 0.5 s need at least two more windows after the first.
    assert elapsed >= 1.0, elapsed


def test_a_429_pauses_every_worker(redis_url: str, hs: HubSpotStandIn) -> None:
    shared = [HubSpotRateLimiter(redis.Redis.from_url(redis_url), max_wait=5.0) for _ in range(2)]
    first = HubSpotContacts(token=hs.token, api_url=hs.url, limiter=shared[0])
    second = HubSpotContacts(token=hs.token, api_url=hs.url, limiter=shared[1])
    hs.script([Scripted(status=429, headers={"Retry-After": "1"})])
    with pytest.raises(HubSpotRateLimitedError):
        first.read_contacts(["1042"], PROPS)
    # The other worker's next read waits out HubSpot's Retry-After before calling.
    started = time.monotonic()
    assert isinstance(second.read_contacts(["1042"], PROPS)["1042"], Found)
    assert 0.7 <= time.monotonic() - started < 3.0
    assert len(hs.requests) == 1  # only the successful read reached the batch endpoint


# -- from the reader to lead events (the shipped crm/hubspot.yaml) ---------------------


def test_read_contacts_become_lead_events_through_the_mapping(hs: HubSpotStandIn) -> None:
    mapping = load_mapping(ROOT / "crm" / "hubspot.yaml", "hubspot")
    props = mapped_properties(mapping)
    assert {"email", "firstname", "annualrevenue", "hs_lead_status"} <= set(props)
    hs.add_contact("1042", annualrevenue="5000", hs_language="da", industry="saas")
    hs.add_contact("1050", email="cy@example.com", annualrevenue="a lot")
    reader = HubSpotContacts(token=hs.token, api_url=hs.url)
    results = reader.read_contacts(["1042", "1043", "1050", "9999"], props)
    hs.delete_contact("1043")
    results.update(reader.read_contacts(["1043"], props))
    events, problems = contact_events(mapping, results)
    for doc in events:
        validate_event(doc)  # every event is a valid lead event
    by_lead = {doc["lead"]["id"]: doc for doc in events}
    ann = by_lead["1042"]
    assert ann["type"] == "lead.updated"
    assert ann["lead"] == {
        "id": "1042",
        "email": "ann@example.com",
        "first_name": "Ann",
        "locale": "da",
        # Unset in HubSpot (null): the attribute is removed, as for an emptied value.
        "attributes": {
            "industry": "saas",
            "budget": 5000,
            "employees": None,
            "lifecycle_stage": None,
        },
    }
    assert ann["id"].startswith("hubspot-fetch:1042:") and ann["occurred_at"].endswith("Z")
    for gone in ("1043", "9999"):
        assert by_lead[gone]["type"] == "lead.deleted"
        assert by_lead[gone]["lead"] == {"id": gone}
    # A value the mapping cannot read is reported for a dead letter, not dropped.
    assert problems == [("1050", "property annualrevenue: 'a lot' is not a number")]
    assert "1050" not in by_lead
