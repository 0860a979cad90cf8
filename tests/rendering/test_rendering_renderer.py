"""Renderer: locale fallback, escaping, strict variables, subjects, footer, caching."""

from __future__ import annotations

import statistics
import timeit
from pathlib import Path
from typing import Any

import pytest

from worker.content import ContentItem, ContentLibrary
from worker.errors import RenderError
from worker.rendering import RenderedEmail, Renderer, TemplateRenderError

LAYOUT = """\
{% block text_footer %}
--
{{ postal_address }}
Unsubscribe: {{ unsubscribe_url }}
{% endblock %}
{% block html_footer %}
<p>{{ postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
{% endblock %}
{% block html_document %}
<html lang="{{ lang }}"><title>{{ subject }}</title>
<body>{{ body }}{{ footer }}</body></html>
{% endblock %}
"""


def email(subject: str, text: str, html: str | None = None) -> str:
    out = f"{{% block subject %}}{subject}{{% endblock %}}\n"
    out += f"{{% block text %}}\n{text}\n{{% endblock %}}\n"
    if html is not None:
        out += f"{{% block html %}}{html}{{% endblock %}}\n"
    return out


def write(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return root


def context(**lead: Any) -> dict[str, Any]:
    return {
        "lead": {"id": "crm-1", "email": "ann@example.com", **lead},
        "event": {"id": "evt-1", "type": "lead.created", "data": {}},
        "sequence": {"id": "value-first", "description": "Value"},
        "step": {"id": "intro"},
        "unsubscribe_url": "https://nurture.example/unsubscribe/tok?a=1&b=2",
        "postal_address": "Berg & Co, Vestergade 1, 1456 København K",
    }


@pytest.fixture
def tpl(tmp_path: Path) -> Path:
    return write(
        tmp_path / "templates",
        {
            "_layout.j2": LAYOUT,
            "da/_layout.j2": LAYOUT.replace("Unsubscribe", "Afmeld"),
            "hello.j2": email("root", "root body"),
            "da/hello.j2": email("da", "da body"),
            "da-DK/hello.j2": email("da-DK", "da-DK body"),
            "fi/hello.j2": email("fi", "fi body"),
            "only_root.j2": email("root only", "root only body"),
            "group/deep.j2": email("deep", "deep body"),
        },
    )


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("da-DK", "da-DK/hello.j2"),
        ("da-dk", "da-DK/hello.j2"),
        ("da_DK", "da-DK/hello.j2"),
        ("da", "da/hello.j2"),
        ("da-GL", "da/hello.j2"),
        ("fi", "fi/hello.j2"),
        ("fi-FI", "fi/hello.j2"),
        ("xx", "hello.j2"),
        ("en", "hello.j2"),
        (None, "hello.j2"),
        ("../../etc", "hello.j2"),
    ],
)
def test_locale_fallback_follows_the_contract(tpl: Path, locale: str | None, expected: str) -> None:
    assert Renderer(tpl).resolve("hello", locale) == tpl / expected


def test_lead_without_locale_uses_the_default_locale_the_same_way(tpl: Path) -> None:
    renderer = Renderer(tpl, default_locale="da-DK")
    assert renderer.resolve("hello", None) == tpl / "da-DK/hello.j2"
    assert renderer.render("hello", None, context()).subject == "da-DK"
    assert Renderer(tpl, default_locale="fi").render("only_root", None, context()).subject == (
        "root only"
    )


def test_missing_template_names_every_path_tried(tpl: Path) -> None:
    with pytest.raises(RenderError) as err:
        Renderer(tpl).resolve("nope", "da-DK")
    message = str(err.value)
    for tried in ("da-DK/nope.j2", "da/nope.j2", "templates/nope.j2"):
        assert tried in message


@pytest.mark.parametrize("name", ["../secret", "_layout", "group/_x", "/abs", "a/../b", "x.j2"])
def test_names_that_could_leave_the_folder_or_are_not_emails_are_refused(
    tpl: Path, name: str
) -> None:
    with pytest.raises(RenderError, match="not a template name"):
        Renderer(tpl).resolve(name, None)


def test_render_uses_the_fallback_and_the_layout_of_the_same_language(tpl: Path) -> None:
    renderer = Renderer(tpl)
    da = renderer.render("hello", "da-DK", context())
    assert (da.subject, da.template_path) == ("da-DK", str(tpl / "da-DK/hello.j2"))
    assert "Afmeld:" in da.text  # da-DK has no layout: da/_layout.j2
    root = renderer.render("only_root", "da", context())
    assert "Unsubscribe:" in root.text  # an English email gets the English footer
    assert renderer.render("group/deep", "fi", context()).subject == "deep"


def test_autoescape_only_in_the_html_part(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "_layout.j2": LAYOUT,
            "e.j2": email(
                "Hi {{ lead.company }}",
                "For {{ lead.company }} <b>",
                "<p>For {{ lead.company }}</p>",
            ),
        },
    )
    out = Renderer(root).render("e", None, context(company="Berg & Co <script>"))
    assert out.subject == "Hi Berg & Co <script>"
    assert "For Berg & Co <script> <b>" in out.text
    assert out.html is not None
    assert "<p>For Berg &amp; Co &lt;script&gt;</p>" in out.html
    assert "<title>Hi Berg &amp; Co &lt;script&gt;</title>" in out.html
    # Footer: address escaped in html, plain in text; the link survives escaping.
    assert "Berg &amp; Co, Vestergade" in out.html
    assert "Berg & Co, Vestergade" in out.text
    assert 'href="https://nurture.example/unsubscribe/tok?a=1&amp;b=2"' in out.html


def test_no_html_block_means_no_html_part(tpl: Path) -> None:
    out = Renderer(tpl).render("hello", None, context())
    assert out.html is None
    assert out.text.startswith("root body\n\n--\n")
    assert "https://nurture.example/unsubscribe/tok?a=1&b=2" in out.text
    assert "Vestergade 1" in out.text


def test_strict_undefined_names_file_and_line(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {
            "_layout.j2": LAYOUT,
            "e.j2": "{% block subject %}Hi{% endblock %}\n{% block text %}\nline three\n"
            "Hello {{ lead.first_name }}\n{% endblock %}\n",
        },
    )
    with pytest.raises(TemplateRenderError) as err:
        Renderer(root).render("e", None, context())
    assert (err.value.file, err.value.line) == (str(root / "e.j2"), 4)
    assert str(err.value).startswith(f"{root / 'e.j2'}:4: `lead.first_name` may be missing")
    assert "default(" in err.value.fix
    assert isinstance(err.value, RenderError)
    # With the field present it renders, and `default` guards work for everyone.
    assert "Hello Ann" in Renderer(root).render("e", None, context(first_name="Ann")).text


def test_code_shared_between_copies_still_names_each_copy_and_follows_edits(
    tmp_path: Path,
) -> None:
    """Templates are parsed and generated once per process for each source (the code is
    shared between catalogs); an error still names the copy that rendered, and an edited
    file renders its new text."""
    files = {
        "_layout.j2": LAYOUT,
        "e.j2": email("Hi", "one\nHello {{ lead.first_name }}"),
    }
    first, second = write(tmp_path / "a", files), write(tmp_path / "b", files)
    for root in (first, second):
        with pytest.raises(TemplateRenderError) as err:
            Renderer(root).render("e", None, context())
        assert (err.value.file, err.value.line) == (str(root / "e.j2"), 4)
    write(second, {"e.j2": email("Hi", "Dear {{ lead.first_name }}")})
    assert "Dear Ann" in Renderer(second).render("e", None, context(first_name="Ann")).text
    assert "Hello Ann" in Renderer(first).render("e", None, context(first_name="Ann")).text


def test_error_in_an_included_template_names_that_file(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {
            "_layout.j2": LAYOUT,
            "_part.j2": "ok\n{{ lead.nope }}\n",
            "e.j2": email("Hi", '{% include "_part.j2" %}'),
        },
    )
    with pytest.raises(TemplateRenderError) as err:
        Renderer(root).render("e", None, context())
    assert (err.value.file, err.value.line) == (str(root / "_part.j2"), 2)
    assert "not something a lead has" in err.value.message


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {"_layout.j2": LAYOUT, "e.j2": email("Hi", "one\ntwo {{ lead.email }\nthree")},
    )
    with pytest.raises(TemplateRenderError) as err:
        Renderer(root).render("e", None, context())
    assert err.value.file == str(root / "e.j2")
    assert err.value.line == 4
    assert "syntax error" in err.value.message


@pytest.mark.parametrize(
    "first_name",
    ["Ann\nBcc: x@evil.example", "Ann\r\nX: y", "Ann\u2028x", "Ann\x85x", "Ann\x0bx"],
)
def test_subject_with_a_line_break_is_refused(tmp_path: Path, first_name: str) -> None:
    root = write(
        tmp_path / "t",
        {"_layout.j2": LAYOUT, "e.j2": "\n\n" + email("Hi {{ lead.first_name }}", "Body")},
    )
    with pytest.raises(TemplateRenderError, match="line break") as err:
        Renderer(root).render("e", None, context(first_name=first_name))
    assert err.value.line == 3


def test_subject_whitespace_is_collapsed_and_text_is_tidied(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {
            "_layout.j2": LAYOUT,
            "e.j2": "{% block subject %}\n   Hello\t  there   \n{% endblock %}\n"
            "{% block text %}\n\nline one   \n\n\n\n\nline two\t\n{% if false %}\nx\n{% endif %}\n"
            "{% endblock %}",
        },
    )
    out = Renderer(root).render("e", None, context())
    assert out.subject == "Hello there"
    assert out.text.startswith("line one\n\nline two\n\n--\n")


def test_empty_subject_and_empty_text_are_errors(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {
            "_layout.j2": LAYOUT,
            "s.j2": email("{% if false %}x{% endif %}", "Body"),
            "t.j2": email("Hi", "{% if false %}x{% endif %}"),
        },
    )
    with pytest.raises(TemplateRenderError, match="subject is empty"):
        Renderer(root).render("s", None, context())
    with pytest.raises(TemplateRenderError, match="no text"):
        Renderer(root).render("t", None, context())


def test_missing_layout_or_footer_link_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path / "a", {"e.j2": email("Hi", "Body")})
    with pytest.raises(TemplateRenderError, match="no layout"):
        Renderer(root).render("e", None, context())
    root = write(
        tmp_path / "b",
        {
            "_layout.j2": "{% block text_footer %}{{ postal_address }}{% endblock %}",
            "e.j2": email("Hi", "Body"),
        },
    )
    with pytest.raises(TemplateRenderError, match="no unsubscribe link"):
        Renderer(root).render("e", None, context())


def test_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {"_layout.j2": LAYOUT, "e.j2": email("Hi", "{{ lead.__class__.__mro__ }}")},
    )
    with pytest.raises(TemplateRenderError) as err:
        Renderer(root).render("e", None, context())
    assert err.value.line == 3


def _library() -> ContentLibrary:
    def item(ident: str, kind: str, industry: str, locale: str = "en") -> ContentItem:
        return ContentItem(
            id=ident,
            kind=kind,
            title=f"Title {ident} & more",
            summary="s",
            outcome="o",
            url=f"https://example.com/{ident}",
            tags={"industry": (industry,)},
            locale=locale,
        )

    return ContentLibrary(
        [
            item("a", "case_study", "saas"),
            item("b", "case_study", "agency"),
            item("g", "guide", "saas"),
        ]
    )


def test_content_helper_is_consistent_across_blocks_and_records_ids(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {
            "_layout.j2": LAYOUT,
            "e.j2": email(
                '{% set cs = content("case_study") %}{{ cs.title if cs else "none" }}',
                '{% set cs = content("case_study") %}{% set two = content("case_study") %}'
                "{{ cs.id if cs else 'none' }} then {{ two.id if two else 'none' }}",
                '{% set cs = content("case_study") %}{% if cs %}<a href="{{ cs.url }}">'
                "{{ cs.title }}</a>{% else %}none{% endif %}",
            ),
        },
    )
    renderer = Renderer(root, content=_library())
    out = renderer.render("e", None, context(attributes={"industry": "agency"}))
    assert out.subject == "Title b & more"
    assert out.text.startswith("b then a")
    assert out.html is not None and "Title b &amp; more" in out.html
    assert out.content_ids == ("b", "a")
    again = renderer.render("e", None, context(attributes={"industry": "agency"}), frozenset({"b"}))
    assert again.text.startswith("a then none")
    assert again.content_ids == ("a",)
    nothing = renderer.render("e", None, context(), frozenset({"a", "b"}))
    assert nothing.subject == "none"


def test_content_without_a_guard_explains_the_fallback(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {
            "_layout.j2": LAYOUT,
            "e.j2": email("Hi", '{% set cs = content("case_study") %}\nRead {{ cs.title }}'),
        },
    )
    with pytest.raises(TemplateRenderError) as err:
        Renderer(root, content=_library()).render("e", None, context(), frozenset({"a", "b"}))
    assert err.value.line == 4
    assert "content('case_study') found nothing left" in err.value.message
    assert "{% else %}" in err.value.fix


def test_unknown_content_kind_is_an_error(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {"_layout.j2": LAYOUT, "e.j2": email("Hi", '{% set cs = content("case-study") %}x')},
    )
    with pytest.raises(TemplateRenderError) as err:
        Renderer(root, content=_library()).render("e", None, context())
    assert "no kind of content called `case-study`" in err.value.message
    assert "case_study" in err.value.fix


def test_first_name_filter(tmp_path: Path) -> None:
    root = write(
        tmp_path / "t",
        {"_layout.j2": LAYOUT, "e.j2": email("Hi {{ lead | first_name('there') }}", "x")},
    )
    renderer = Renderer(root)
    assert renderer.render("e", None, context()).subject == "Hi there"
    assert renderer.render("e", None, context(first_name="  ")).subject == "Hi there"
    assert renderer.render("e", None, context(first_name="Åse")).subject == "Hi Åse"


def test_templates_are_compiled_once(tpl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer(tpl)
    renderer.render("hello", "da", context())
    calls: list[str] = []
    original = renderer.compile_file
    monkeypatch.setattr(renderer, "compile_file", lambda rel: calls.append(rel) or original(rel))
    for _ in range(3):
        renderer.render("hello", "da", context())
    assert calls == []


def test_render_is_fast_enough_for_the_hot_path() -> None:
    root = Path(__file__).resolve().parents[2]
    library, _ = ContentLibrary.load(root / "content")
    renderer = Renderer(root / "templates", content=library)
    ctx = context(first_name="Ann", company="Berg & Co", attributes={"industry": "saas"})
    result: list[RenderedEmail] = []
    runs = timeit.repeat(
        lambda: result.append(renderer.render("value/case_study", "da", ctx)), number=50, repeat=5
    )
    median_us = statistics.median(runs) / 50 * 1e6
    # Measured ~130 µs on a developer machine; a generous bound so CI is not flaky.
    assert median_us < 5000
