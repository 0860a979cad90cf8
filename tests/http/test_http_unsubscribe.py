"""GET/POST /unsubscribe/{token}: the localized page, RFC 8058 one-click, forged tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness import Harness
from tests.http.helpers import LiveServer
from worker.runtime import Runtime
from worker.tokens import make_token, signed_token


def _lead(harness: Harness, lead_id: str = "lead-1", locale: str | None = None) -> str:
    data = {"id": lead_id, "email": f"{lead_id}@example.com"}
    if locale:
        data["locale"] = locale
    harness.rt.store.save_lead(lead_id, data, None)
    return harness.rt.unsubscribe_url(lead_id).removeprefix(harness.rt.settings.public_url)


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        (None, ["Unsubscribe", "Do you want to stop receiving emails"]),
        ("da-DK", ["Afmeld", "Vil du afmelde dig"]),
        ("fi", ["Peru tilaus", "Haluatko lopettaa"]),
        ("de", ["Unsubscribe"]),  # no German translation: English
    ],
)
def test_page_is_localized_with_a_form_that_posts(
    live: LiveServer, harness: Harness, locale: str | None, words: list[str]
) -> None:
    path = _lead(harness, locale=locale)
    response = live.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for word in words:
        assert word in response.text
    assert f'<form method="post" action="{path}">' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    # Looking is not unsubscribing (link scanners fetch every URL).
    lead = harness.rt.store.get_lead("lead-1")
    assert lead is not None and lead.suppressed is None


def test_one_click_post_unsubscribes_at_once_and_is_idempotent(
    live: LiveServer, harness: Harness
) -> None:
    path = _lead(harness, locale="da")
    for _ in range(2):
        response = live.client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
        assert "Du er afmeldt" in response.text
    store = harness.rt.store
    lead = store.get_lead("lead-1")
    assert lead is not None and lead.suppressed == "unsubscribe"
    assert store.email_suppressed("lead-1@example.com") == "unsubscribe"
    # The page now says so.
    assert "allerede afmeldt" in live.client.get(path).text


def test_page_form_and_empty_post_and_multipart(live: LiveServer, harness: Harness) -> None:
    for lead_id, kwargs in [
        ("a", {"content": b""}),
        ("b", {"data": {"List-Unsubscribe": "One-Click", "source": "page"}}),
        ("c", {"files": {"List-Unsubscribe": (None, "One-Click")}}),
    ]:
        path = _lead(harness, lead_id)
        response = live.client.post(path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, (lead_id, response.text)
        lead = harness.rt.store.get_lead(lead_id)
        assert lead is not None and lead.suppressed == "unsubscribe"


def test_json_answers_for_scripts(live: LiveServer, harness: Harness) -> None:
    path = _lead(harness)
    headers = {"Accept": "application/json"}
    assert live.client.get(path, headers=headers).json() == {
        "status": "subscribed",
        "lead_known": True,
    }
    response = live.client.post(path, headers=headers)
    assert response.json() == {"status": "unsubscribed", "lead_known": True}


def test_forged_and_altered_tokens_change_nothing(live: LiveServer, harness: Harness) -> None:
    path = _lead(harness)
    token = path.rsplit("/", 1)[1]
    forged = make_token("someone-elses-secret", "lead-1")
    altered = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    # The older signed form: a signature made with another secret.
    head, sig = signed_token("someone-elses-secret", "lead-1").split(".")
    other_lead = signed_token("someone-elses-secret", "lead-2").split(".")[0] + "." + sig
    bad_tokens = [forged, altered, head + "." + sig, other_lead, "nonsense", "a.b", "x" * 2000]
    for bad in [*bad_tokens, "%00"]:
        for method in ("GET", "POST"):
            response = live.client.request(method, f"/unsubscribe/{bad}")
            assert response.status_code == 404, (bad, method)
            assert "text/html" in response.headers["content-type"]
            assert "does not work" in response.text
        response = live.client.post(f"/unsubscribe/{bad}", headers={"Accept": "application/json"})
        assert response.status_code == 404
        assert response.json()["error"] == "invalid_token"
    lead = harness.rt.store.get_lead("lead-1")
    assert lead is not None and lead.suppressed is None


def test_other_bodies_are_refused(live: LiveServer, harness: Harness) -> None:
    path = _lead(harness)
    response = live.client.post(path, content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    response = live.client.post(path, content=b"x" * 5000)
    assert response.status_code == 413
    lead = harness.rt.store.get_lead("lead-1")
    assert lead is not None and lead.suppressed is None


def test_unknown_lead_with_valid_token_gets_the_done_page(
    live: LiveServer, harness: Harness
) -> None:
    path = harness.rt.unsubscribe_url("never-seen").removeprefix(harness.rt.settings.public_url)
    assert live.client.post(path).status_code == 200


def test_redis_down_gives_a_503_page(
    make_harness: Callable[..., Harness], serve: Callable[[Runtime], LiveServer]
) -> None:
    harness = make_harness(redis_url="redis://127.0.0.1:9/0")
    live = serve(harness.rt)
    token = make_token("unsubscribe-test-secret", "lead-1")
    response = live.client.post(f"/unsubscribe/{token}")
    assert response.status_code == 503
    assert "try again" in response.text
