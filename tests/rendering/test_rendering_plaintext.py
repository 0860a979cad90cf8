"""The text part's shape: wrapping at 72 and the HTML part made from the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.rendering import Renderer, TemplateRenderError
from worker.rendering.plaintext import WIDTH, text_to_html, wrap_text

LONG = (
    "Thank you for getting in touch with us. Before we send you anything else, we "
    "would like to ask one thing: what made you get in touch now?"
)
URL = "https://example.com/a/very/long/address/that/is/longer/than/one/line/of/text?x=1&y=2"


def test_long_lines_wrap_at_72_and_short_lines_stay_as_written() -> None:
    text = f"Hi Ann,\n\n{LONG}\n\nWarm regards,\nMaria Holm, Partner\n\n--\n{LONG}"
    wrapped = wrap_text(text)
    lines = wrapped.split("\n")
    assert max(map(len, lines)) <= WIDTH
    assert " ".join(wrapped.split()) == " ".join(text.split())  # no word lost or split
    assert lines[:2] == ["Hi Ann,", ""]
    assert "\n\nWarm regards,\nMaria Holm, Partner\n\n--\n" in wrapped  # separator kept
    assert wrap_text(wrapped) == wrapped  # wrapping twice changes nothing
    assert wrap_text("short\nlines") == "short\nlines"


def test_links_are_never_broken() -> None:
    wrapped = wrap_text(f"The whole story is here: {URL} and more words after it.")
    assert URL in wrapped.split("\n")
    assert wrap_text(URL) == URL


def test_list_items_get_a_hanging_indent() -> None:
    wrapped = wrap_text(f"- {LONG}\n1. {LONG}\n  {LONG}")
    lines = wrapped.split("\n")
    assert max(map(len, lines)) <= WIDTH
    first_item = lines[: lines.index(next(x for x in lines if x.startswith("1. ")))]
    assert first_item[0].startswith("- ")
    assert all(line.startswith("  ") and line[2] != " " for line in first_item[1:])
    numbered = [x for x in lines if x.startswith("   ")]
    assert numbered and all(line[3] != " " for line in numbered)
    assert lines[-1].startswith("  ") and lines[-2].startswith("  ")


def test_a_no_break_space_holds() -> None:
    text = "Resultatet: den månedlige kundeafgang faldt fra 4,1\u00a0% til 2,0\u00a0% på seks "
    wrapped = wrap_text(text * 2)
    assert "\u00a0%" in wrapped and "\n%" not in wrapped


def test_html_from_text_escapes_links_and_keeps_short_lines() -> None:
    text = (
        f"Hi Berg & Co <b>,\n\n{LONG}\nMore: {URL}.\n\n"
        '"https://cal.example/maria", or (https://x.example/a_(b)).\n\n\n'
        "Warm regards,\nMaria Holm"
    )
    html = str(text_to_html(text))
    assert html.startswith("<p>Hi Berg &amp; Co &lt;b&gt;,</p>\n")
    href = URL.replace("&", "&amp;")
    assert f'<a href="{href}" rel="noopener">{href}</a>.</p>' in html
    assert '&#34;<a href="https://cal.example/maria" rel="noopener">' in html
    assert '<a href="https://x.example/a_(b)" rel="noopener">https://x.example/a_(b)</a>).' in html
    assert "<p>Warm regards,<br>\nMaria Holm</p>" in html
    assert "<p></p>" not in html
    # A long paragraph flows: its line breaks are not kept.
    assert "<br>" not in html.split("</p>")[1]


def test_text_as_html_in_a_template(tmp_path: Path) -> None:
    root = tmp_path / "templates"
    root.mkdir()
    (root / "_layout.j2").write_text(
        "{% block text_footer %}\n--\n{{ unsubscribe_url }} {{ postal_address }}\n{% endblock %}\n"
        '{% block html_footer %}<a href="{{ unsubscribe_url }}">x</a> {{ postal_address }}'
        "{% endblock %}\n{% block html_document %}<html>{{ body }}{{ footer }}</html>"
        "{% endblock %}\n",
        encoding="utf-8",
    )
    (root / "ok.j2").write_text(
        "{% block subject %}Hi{% endblock %}\n"
        f"{{% block text %}}\nHi {{{{ lead.company }}}},\n\n{LONG}\n{URL}\n{{% endblock %}}\n"
        "{% block html %}\n{{ text_as_html() }}\n{% endblock %}\n",
        encoding="utf-8",
    )
    (root / "bad.j2").write_text(
        "{% block subject %}Hi{% endblock %}\n{% block text %}\nHi\n{{ text_as_html() }}\n"
        "{% endblock %}\n",
        encoding="utf-8",
    )
    address = "Berg & Co ApS, Vestergade 1, 1456 København K, Denmark, Europe, planet Earth"
    ctx = {
        "lead": {"id": "l", "email": "a@example.com", "company": "Berg & Co"},
        "event": {"id": "e", "type": "x"},
        "unsubscribe_url": "https://nurture.example/u/tok",
        "postal_address": address,
    }
    renderer = Renderer(root)
    email = renderer.render("ok", None, ctx)
    assert all(len(line) <= WIDTH or line == URL for line in email.text.splitlines())
    assert email.html is not None
    assert "<p>Hi Berg &amp; Co,</p>" in email.html
    assert f'<a href="{URL.replace("&", "&amp;")}" rel="noopener">' in email.html
    # A postal address longer than a line is wrapped, and still counts as shown.
    assert address not in email.text and " ".join(address.split()) in " ".join(email.text.split())
    with pytest.raises(TemplateRenderError) as err:
        renderer.render("bad", None, ctx)
    assert err.value.line == 4 and err.value.file.endswith("bad.j2")
    assert "text_as_html()" in err.value.message and "html block" in err.value.fix
