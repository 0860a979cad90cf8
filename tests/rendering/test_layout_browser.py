"""The HTML layout looked at in a real browser (issue 13, item 5).

Renders a shipped email in each language, opens it in headless Chromium (Debian's
``chromium`` package; ``.ci/run`` installs it) and reads the screenshot: the message
sits in one white 600-pixel column centred on the page background on a desktop-wide
window, and fills the width (less the padding) on a phone-wide one. The layout is
table-based so Outlook for Windows (Word's renderer, which ignores ``max-width`` and
``margin: auto`` on a ``div``) keeps it too; that part is checked on the HTML itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.browser import FLAGS, chromium, read_png
from worker.catalog import LiveCatalog

pytestmark = pytest.mark.slow

BACKGROUND = (0xF5, 0xF4, 0xF0)
WHITE = (0xFF, 0xFF, 0xFF)


def screenshot(html: Path, out: Path, width: int, profile: Path) -> list[list[tuple[int, ...]]]:
    """Open ``html`` in headless Chromium at ``width`` pixels and return the pixels."""
    result = subprocess.run(
        [
            chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},900",
            f"--screenshot={out}",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.is_file(), f"chromium wrote no screenshot: {result.stderr[-2000:]}"
    return read_png(out.read_bytes())


def white_column(row: list[tuple[int, ...]]) -> tuple[int, int]:
    """First and last x of the white run in a row that otherwise shows the background."""
    xs = [x for x, pixel in enumerate(row) if pixel == WHITE]
    assert xs, "no white column in this row"
    return xs[0], xs[-1]


def render(catalog: LiveCatalog, locale: str) -> str:
    context: dict[str, Any] = {
        "lead": {
            "id": "l1",
            "email": "ann@example.com",
            "first_name": "Ann",
            "company": "Berg & Co",
            "locale": locale,
            "attributes": {"industry": "saas"},
        },
        "event": {"id": "e1", "type": "lead.created", "data": {}},
        "sequence": {"id": "value-first", "description": ""},
        "step": {"id": "case-study"},
        "unsubscribe_url": "https://nurture.example/unsubscribe/token",
        "postal_address": "Vesterbrogade 1, 1620 København V",
        "sender": {"name": "Maria Holm", "title": "Partner"},
    }
    email = catalog.current.renderer.render("value/case_study", locale, context)
    assert email.html is not None
    return email.html


@pytest.mark.parametrize("locale", ["en", "da", "fi"])
def test_the_layout_holds_in_a_real_browser(
    shipped_catalog: LiveCatalog, tmp_path: Path, locale: str
) -> None:
    html = render(shipped_catalog, locale)
    # Outlook (Word) keeps tables: the column is a table, fixed to 600 for MSO.
    assert '<table role="presentation"' in html
    assert '<!--[if mso]><table role="presentation" width="600"' in html
    assert "<div" not in html
    page = tmp_path / "email.html"
    page.write_text(html, encoding="utf-8")

    wide = screenshot(page, tmp_path / "wide.png", 1000, tmp_path / "profile-wide")
    row = wide[60]
    assert row[5] == BACKGROUND and row[-5] == BACKGROUND
    left, right = white_column(row)
    assert right - left + 1 == 600, (left, right)
    assert abs(left - (1000 - 1 - right)) <= 1, "the column is not centred"

    narrow = screenshot(page, tmp_path / "narrow.png", 400, tmp_path / "profile-narrow")
    left, right = white_column(narrow[60])
    assert (left, right) == (12, 400 - 13), "the column does not fill a phone's width"
