"""keep-giving, end to end on a real Redis with real dramatiq workers (article 001:
trust comes from consistent contact over time).

After the active sequence, a lead who has not engaged gets one new piece every four
weeks, in its own language, never one it already had; a reply ends it; a lead we
contacted first (outbound) never gets it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml

from tests.harness import Harness, event, running
from worker.leadview import lead_view, render_text

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400.0
URL = re.compile(r"https://example\.com/\S+")
PIECES = [f"piece-{n}" for n in range(1, 7)]


def lead(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "first_name": "Aino",
        "company": "Virta Oy",
        "source": "website",
        "locale": "fi",
        "timezone": "Europe/Helsinki",
        "attributes": {"industry": "saas", "problem": "churn"},
    }
    doc.update(fields)
    return doc


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def with_keep_giving(catalog_dirs: dict[str, Path]) -> None:
    # The shared fixture leaves keep-giving out (tests/conftest.py); put it back.
    shutil.copy(ROOT / "sequences" / "keep-giving.yaml", catalog_dirs["sequences"])


def test_keep_giving_sends_a_new_piece_every_four_weeks_in_the_lead_language(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    with_keep_giving(catalog_dirs)
    h = make_harness()
    with running(h):
        h.emit(event("e1", **lead()))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 250 * DAY)
    messages = [m for m in h.messages() if m["X-Nurture-Lead"] == "lead-1"]
    steps = [(m["X-Nurture-Sequence"], m["X-Nurture-Step"]) for m in messages]
    keep = [m for m in messages if m["X-Nurture-Sequence"] == "keep-giving"]
    assert [m["X-Nurture-Step"] for m in keep] == PIECES, steps
    # It starts after value-first has ended.
    assert steps.index(("keep-giving", "piece-1")) > steps.index(("value-first", "how-to-guide"))
    seen: set[str] = set()
    for message in messages:
        text = text_of(message)
        assert "Hei Aino" in text and "Ystävällisin terveisin" in text, text
        for url in URL.findall(text):
            if "/unsubscribe/" in url:
                continue
            assert "/fi/" in url, (message["X-Nurture-Step"], url)  # Finnish pieces only
            assert url not in seen, f"{url} sent twice"
            seen.add(url)


def test_a_reply_ends_keep_giving_and_outbound_leads_never_get_it(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    with_keep_giving(catalog_dirs)
    h = make_harness()
    with running(h):
        h.emit(event("e1", **lead()))
        h.emit(event("e2", lead_id="lead-2", email="sam@example.com", **lead(source="outbound")))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 70 * DAY)
        h.emit(event("e3", "lead.replied", email=None))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 200 * DAY)
    first = [m["X-Nurture-Step"] for m in h.messages() if m["X-Nurture-Sequence"] == "keep-giving"]
    assert 1 <= len(first) < len(PIECES), first
    outbound = [m["X-Nurture-Sequence"] for m in h.messages() if m["X-Nurture-Lead"] == "lead-2"]
    assert outbound and set(outbound) == {"outbound-intro"}
    # The reason is on the enrollment and in `nurture lead`.
    enrollment = h.rt.store.enrollment("lead-1", "keep-giving")
    assert enrollment is not None and enrollment.reason == "exit_on:lead.replied"
    text = render_text(lead_view(h.rt.store, h.rt.catalog.current.catalog, "lead-1"))
    assert "keep-giving" in text and "exit_on:lead.replied" in text, text


def test_keep_giving_ends_when_no_new_piece_is_left_in_the_lead_language(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    """With only three Finnish pieces in the library, keep-giving sends what is left
    and then ends (instead of an email with nothing new in it); the reason is on the
    enrollment and in ``nurture lead``."""
    with_keep_giving(catalog_dirs)
    kept = 0
    for path in sorted(catalog_dirs["content"].glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        items = []
        for item in doc["items"]:
            if item.get("locale") == "fi":
                if kept >= 3:
                    continue
                kept += 1
            items.append(item)
        path.write_text(yaml.safe_dump({"items": items}, allow_unicode=True), encoding="utf-8")
    h = make_harness()
    with running(h):
        h.emit(event("e1", **lead()))
        h.emit(event("e2", lead_id="lead-2", email="ann@example.com", **lead(locale="en")))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 250 * DAY)
    sent = [m for m in h.messages() if m["X-Nurture-Lead"] == "lead-1"]
    keep = [m for m in sent if m["X-Nurture-Sequence"] == "keep-giving"]
    assert 1 <= len(keep) < len(PIECES), [m["X-Nurture-Step"] for m in keep]
    for message in keep:  # every email that went out has a new Finnish piece
        assert any("/fi/" in url for url in URL.findall(text_of(message)))
    urls = [u for m in sent for u in URL.findall(text_of(m)) if "/unsubscribe/" not in u]
    assert len(urls) == len(set(urls)) and len(urls) <= kept
    enrollment = h.rt.store.enrollment("lead-1", "keep-giving")
    assert enrollment is not None and enrollment.state == "exited"
    reason = "content exhausted: no piece left in fi the lead has not had"
    assert enrollment.reason == reason
    text = render_text(lead_view(h.rt.store, h.rt.catalog.current.catalog, "lead-1"))
    assert reason in text, text
    # The English lead, with the whole English library, got all six.
    english = [m for m in h.messages() if m["X-Nurture-Lead"] == "lead-2"]
    assert [m["X-Nurture-Step"] for m in english if m["X-Nurture-Sequence"] == "keep-giving"] == (
        PIECES
    )
