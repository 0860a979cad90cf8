"""Render one email for one lead from ``templates/[<locale>/]<name>.j2``.

An email template has the blocks ``subject`` and ``text`` (both required) and
``html`` (optional). The renderer renders each block on its own, adds the footer from
``_layout.j2`` (postal address and unsubscribe link, in both parts) and wraps the HTML
part in the layout's ``html_document``.

Why every template is compiled twice: Jinja decides about HTML escaping when it
compiles, not when it renders. The subject and the text part must never be escaped
(``Berg & Co`` stays ``Berg & Co``), the HTML part always must (``Berg &amp; Co``). So
one sandboxed environment without autoescape renders ``subject`` and ``text``, a second
one with autoescape renders ``html``, and each keeps its own compiled copy.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    nodes,
)
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from worker.content import KINDS, ContentItem, ContentLibrary, locale_chain, normalize_locale
from worker.errors import ContentCallError, HelperCallError, RenderError, did_you_mean
from worker.rendering.explain import explain, syntax_fix
from worker.rendering.plaintext import text_to_html, wrap_text

EMAIL_BLOCKS = ("subject", "text", "html")
LAYOUT_BLOCKS = ("text_footer", "html_footer", "html_document")
LAYOUT = "_layout"
# A template name: path segments of letters, digits, - and _, never starting with _
# (those files are layouts and partials) and never `..`, so a name cannot leave the
# templates directory.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(/[A-Za-z0-9][A-Za-z0-9_-]*)*$")
# Characters that would end a mail header line: refused in subjects.
_LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
# A folder directly under templates/ is a locale folder when it looks like a language
# tag with a 2-3 letter language (da, fi, da-DK, pt-BR); any other folder (value,
# referral) groups email names.
_LOCALE_DIR = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def is_locale_dir(name: str) -> bool:
    """True when a folder directly under templates/ holds a locale's templates."""
    return bool(_LOCALE_DIR.match(name))


def locale_dirs(locale: str | None, default_locale: str) -> list[str]:
    """The locale folders tried for ``locale``, most specific first (``da-DK``, ``da``)."""
    return [loc for loc in locale_chain(locale, default_locale) if is_locale_dir(loc)]


def template_candidates(name: str, locale: str | None, default_locale: str) -> list[str]:
    """Relative template paths tried for ``name`` in ``locale``, in order: its
    :func:`locale_dirs`, then the templates folder's own file (contract fallback)."""
    return [f"{loc}/{name}.j2" for loc in locale_dirs(locale, default_locale)] + [f"{name}.j2"]


class TemplateRenderError(RenderError):
    """A :class:`RenderError` that knows the template file and line.

    ``str()`` is ``file:line: message — fix`` like :class:`worker.errors.Problem`.

    Attributes:
        file: The template file (as found under the templates directory).
        line: 1-based line in that file; 0 when unknown.
        message: What went wrong.
        fix: What to do about it.
    """

    def __init__(self, file: str, line: int, message: str, fix: str = "") -> None:
        self.file = file
        self.line = line
        self.message = message
        self.fix = fix
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}" + (f" — {fix}" if fix else ""))


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered email.

    Attributes:
        subject: One line, whitespace collapsed.
        text: The plain-text part, footer included.
        html: The HTML document, footer included; None when the template has no html block.
        template_path: The template file used (after locale fallback).
        content_ids: Ids of the content items the template picked, in order.
        found_nothing: The ``content(...)`` calls that found no piece (none left for
            the lead in the email's language), in order.
    """

    subject: str
    text: str
    html: str | None
    template_path: str
    content_ids: tuple[str, ...]
    found_nothing: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Compiled:
    """A resolved template, compiled in both environments, with its layout."""

    path: str
    lang: str
    text: Template
    html: Template | None
    layout_path: str
    layout_text: Template
    layout_html: Template | None
    block_lines: Mapping[str, int]


def first_name(lead: Any, fallback: str = "there") -> str:
    """Jinja filter: the lead's first name, or ``fallback`` when it has none.

    ``Hi {{ lead | first_name("there") }}`` reads better than a ``default`` chain and
    also covers an empty string from the CRM.
    """
    if isinstance(lead, Mapping):
        name = lead.get("first_name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    return fallback


@dataclass
class _RenderState:
    """What one render call remembers: the content picked so far, and the text.

    ``content()`` is called once per block that shows the piece (the text part and
    the HTML part both call it), so the n-th call with the same arguments in each
    block returns the same item; a further call in the same block picks the next one.
    ``body`` is the text block's output (cleaned, not yet wrapped) once it is
    rendered, for ``text_as_html()`` in the html block.
    """

    library: ContentLibrary | None
    lead: Mapping[str, Any]
    locale: str | None
    received: frozenset[str]
    preferred: frozenset[str] = frozenset()
    picked: dict[tuple[Any, ...], list[ContentItem | None]] = field(default_factory=dict)
    counters: dict[tuple[Any, ...], int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    empty_calls: list[str] = field(default_factory=list)
    body: str | None = None

    def next_block(self) -> None:
        self.counters.clear()

    def text_as_html(self) -> Markup:
        """Template helper: the text part as HTML paragraphs, links clickable.

        ``{% block html %}{{ text_as_html() }}{% endblock %}`` makes the HTML part
        from the text part (one copy to write), built once in Python.
        """
        if self.body is None:
            raise HelperCallError(
                "text_as_html() was called before the text part exists",
                "use it only in the html block: {% block html %}{{ text_as_html() }}{% endblock %}",
            )
        return text_to_html(self.body)

    def content(self, kind: str | None = None, **tags: str) -> ContentItem | None:
        if kind is not None and kind not in KINDS:
            hint = did_you_mean(str(kind), KINDS)
            raise ContentCallError(
                f"content({kind!r}): there is no kind of content called `{kind}`",
                f"{hint}the kinds are {', '.join(KINDS)}",
            )
        key = (kind, tuple(sorted((k, str(v)) for k, v in tags.items())))
        index = self.counters.get(key, 0)
        self.counters[key] = index + 1
        already = self.picked.setdefault(key, [])
        if index < len(already):
            return already[index]
        item = None
        if self.library is not None:
            item = self.library.pick(
                kind,
                self.lead,
                self.locale,
                self.received | frozenset(self.ids),
                preferred=self.preferred,
                **tags,
            )
        already.append(item)
        if item is None:
            args = [repr(kind)] if kind else []
            args += [f"{k}={v!r}" for k, v in sorted(tags.items())]
            self.empty_calls.append(f"content({', '.join(args)})")
        else:
            self.ids.append(item.id)
        return item


#: How many generated template modules (and syntax trees) a process keeps: the shipped
#: catalog has 54 (about 0.4 MB of Python), so several versions over live edits.
_CODE_CACHE_SIZE = 512


class _BoundedCache(dict[Any, Any]):
    """A dict that forgets its oldest entries past :data:`_CODE_CACHE_SIZE` (a reload
    after an edit adds new sources; the old ones go eventually). Reads need no lock."""

    _lock = threading.Lock()

    def keep(self, key: Any, value: Any) -> Any:
        with self._lock:
            self[key] = value
            while len(self) > _CODE_CACHE_SIZE:
                self.pop(next(iter(self)), None)
        return value


#: The Python that Jinja generates for a template source, by (autoescape, name, source).
_GENERATED = _BoundedCache()
#: The syntax tree of a template source, by source (see :meth:`Renderer.parse`).
_TREES = _BoundedCache()


class _Environment(SandboxedEnvironment):
    """Jinja's sandbox that parses and generates the Python of each template source
    once per process.

    Parsing and code generation are most of loading a catalog: ``nurture validate``'s
    template check, the runtime's renderer and each reload after a live edit would
    otherwise do them again for templates that did not change. The generated Python
    depends only on the source, the template's name and the environment's options
    (all fixed by :meth:`Renderer._environment` but ``autoescape``), so it is kept by
    those; it is compiled with each file's own name so that error lines and tracebacks
    still point at the file. A source that fails to parse is never kept.
    """

    def compile(  # type: ignore[override]
        self,
        source: str | nodes.Template,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> str | CodeType:
        if raw:
            return super().compile(source, name, filename, raw=True, defer_init=defer_init)
        if not isinstance(source, str) or defer_init:
            return super().compile(source, name, filename, defer_init=defer_init)
        key = (bool(self.autoescape), name, source)
        generated: str | None = _GENERATED.get(key)
        if generated is None:
            generated = _GENERATED.keep(key, super().compile(source, name, filename, raw=True))
        return compile(str(generated), filename or "<template>", "exec")


class Renderer:
    """Finds, compiles (once) and renders email templates.

    Thread-safe: the compiled-template cache is a dict filled under a lock; rendering
    itself shares nothing between calls.
    """

    def __init__(
        self,
        templates_dir: Path,
        default_locale: str = "en",
        content: ContentLibrary | None = None,
    ) -> None:
        """Set up both environments.

        Args:
            templates_dir: The ``templates/`` directory.
            default_locale: Locale for leads without one (``NURTURE_DEFAULT_LOCALE``).
            content: The content library behind ``content()``; None: it finds nothing.
        """
        self.templates_dir = Path(templates_dir)
        self.default_locale = normalize_locale(default_locale) or "en"
        self.content = content
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str | None], _Compiled] = {}
        self.text_env = self._environment(autoescape=False)
        self.html_env = self._environment(autoescape=True)
        # Both environments have the same globals (range, dict, ...): merged into each
        # render's variables once, see _block.
        self._globals = dict(self.text_env.globals)

    def _environment(self, *, autoescape: bool) -> SandboxedEnvironment:
        env = _Environment(
            loader=FileSystemLoader(str(self.templates_dir), encoding="utf-8"),
            undefined=StrictUndefined,
            autoescape=autoescape,
            # Block tags on their own line leave no blank line behind: marketers write
            # {% if %} on its own line and expect the text to read naturally.
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            # Templates change with a deploy (or a new Renderer), not under a running
            # worker; not stat-ing files on every render keeps the hot path cheap.
            auto_reload=False,
            cache_size=-1,
        )
        env.filters["first_name"] = first_name
        return env

    # ------------------------------------------------------------------ resolving

    def candidates(self, name: str, locale: str | None) -> list[str]:
        """Relative template paths tried for ``name``, in order (contract fallback)."""
        return template_candidates(name, locale, self.default_locale)

    def display(self, relative: str) -> str:
        """A relative template path as the user sees it: ``templates/da/x.j2``."""
        return os.path.normpath(os.path.join(str(self.templates_dir), relative))

    def resolve(self, name: str, locale: str | None) -> Path:
        """The template file for ``name`` and a lead's locale.

        ``da-DK`` tries ``da-DK/<name>.j2``, ``da/<name>.j2``, then ``<name>.j2``; a lead
        without a locale uses the default locale the same way.

        Raises:
            RenderError: For a bad name, or naming every path tried when none exists.
        """
        return self.templates_dir / self._resolve_relative(name, locale)

    def _resolve_relative(self, name: str, locale: str | None) -> str:
        if not _NAME.match(name):
            raise RenderError(
                f"`{name}` is not a template name; write it like value/case_study "
                "(letters, digits, - and _, folders separated by /, no .j2)"
            )
        tried = self.candidates(name, locale)
        for relative in tried:
            if (self.templates_dir / relative).is_file():
                return relative
        raise RenderError(
            f"no template `{name}` for locale {locale or self.default_locale!r}; tried "
            + ", ".join(self.display(t) for t in tried)
        )

    def _layout_relative(self, lang: str | None) -> str:
        """The layout for a template found in locale folder ``lang`` (None: root)."""
        chain = locale_chain(lang, self.default_locale) if lang else ()
        tried = [f"{loc}/{LAYOUT}.j2" for loc in chain if is_locale_dir(loc)] + [f"{LAYOUT}.j2"]
        for relative in tried:
            if (self.templates_dir / relative).is_file():
                return relative
        raise TemplateRenderError(
            self.display(f"{LAYOUT}.j2"),
            0,
            "there is no layout, so emails would go out without the footer "
            "(postal address and unsubscribe link)",
            f"create {self.display(f'{LAYOUT}.j2')} with the blocks text_footer, "
            "html_footer and html_document",
        )

    # ------------------------------------------------------------------ compiling

    def load(self, name: str, locale: str | None) -> _Compiled:
        """Resolve and compile ``name`` for ``locale`` (cached)."""
        key = (name, normalize_locale(locale))
        found = self._cache.get(key)
        if found is None:
            found = self.compile_file(self._resolve_relative(name, locale))
            with self._lock:
                self._cache[key] = found
        return found

    def compile_file(self, relative: str) -> _Compiled:
        """Compile one email template file (relative to the templates directory).

        Raises:
            TemplateRenderError: Syntax errors and missing blocks, with file and line.
        """
        display = self.display(relative)
        first = relative.split("/", 1)[0]
        lang = first if "/" in relative and is_locale_dir(first) else None
        text = self._get(self.text_env, relative)
        if "subject" not in text.blocks or "text" not in text.blocks:
            missing = [b for b in ("subject", "text") if b not in text.blocks]
            raise TemplateRenderError(
                display,
                0,
                f"the template has no {' and no '.join(missing)} block",
                "every email needs {% block subject %}...{% endblock %} and "
                "{% block text %}...{% endblock %}",
            )
        html = self._get(self.html_env, relative) if "html" in text.blocks else None
        layout_relative = self._layout_relative(lang)
        layout_text = self._get(self.text_env, layout_relative)
        layout_html = self._get(self.html_env, layout_relative) if html is not None else None
        for tpl, needed in ((layout_text, ("text_footer",)), (layout_html, LAYOUT_BLOCKS)):
            if tpl is None:
                continue
            for block in needed:
                if block not in tpl.blocks:
                    raise TemplateRenderError(
                        self.display(layout_relative),
                        0,
                        f"the layout has no {block} block",
                        f"add {{% block {block} %}}...{{% endblock %}} to the layout",
                    )
        return _Compiled(
            path=display,
            lang=lang or self.default_locale,
            text=text,
            html=html,
            layout_path=self.display(layout_relative),
            layout_text=layout_text,
            layout_html=layout_html,
            block_lines=self._block_lines(relative),
        )

    def _get(self, env: SandboxedEnvironment, relative: str) -> Template:
        try:
            return env.get_template(relative)
        except TemplateSyntaxError as exc:
            raise TemplateRenderError(
                self.display(exc.name or relative) if exc.name else self.display(relative),
                exc.lineno,
                f"template syntax error: {exc.message}",
                syntax_fix(exc.message or ""),
            ) from None
        except TemplateNotFound as exc:
            raise TemplateRenderError(
                self.display(relative),
                0,
                f"template `{exc.name}` was not found",
                "check the name in {% include %} or {% import %}",
            ) from None

    def _block_lines(self, relative: str) -> dict[str, int]:
        """Line of each block tag, for errors about a whole block (e.g. the subject)."""
        source = (self.templates_dir / relative).read_text(encoding="utf-8")
        tree = self.parse(source, relative)
        return {block.name: block.lineno for block in tree.find_all(nodes.Block)}

    def parse(self, source: str, relative: str) -> nodes.Template:
        """The syntax tree of a template source, parsed once per process (the tree is
        shared: read it, never change it).

        Raises:
            TemplateSyntaxError: Naming ``relative`` and its file.
        """
        tree: nodes.Template | None = _TREES.get(source)
        if tree is None:
            parsed = self.text_env.parse(source, name=relative, filename=self.display(relative))
            tree = _TREES.keep(source, parsed)
        return tree

    def block_line(self, relative: str, block: str) -> int:
        """The line of ``{% block <block> %}`` in a template file (0 when absent)."""
        return self._block_lines(relative).get(block, 0)

    # ------------------------------------------------------------------ rendering

    def render(
        self,
        name: str,
        locale: str | None,
        context: Mapping[str, Any],
        received: frozenset[str] = frozenset(),
        *,
        preferred: frozenset[str] = frozenset(),
        internal: bool = False,
    ) -> RenderedEmail:
        """Render template ``name`` for a lead.

        Args:
            name: Template name as in a sequence step, e.g. ``value/case_study``.
            locale: The lead's locale (None: the default locale).
            context: ``lead``, ``event``, ``sequence``, ``step``, ``unsubscribe_url``,
                ``postal_address``.
            received: Content ids the lead already got; ``content()`` skips them.
            preferred: Tag values the lead clicked; ``content()`` prefers pieces
                carrying them (after the tags the template asks for).
            internal: A ``notify:`` email to a person inside the company: the text
                part only, without the layout's footer (no unsubscribe link, no
                postal address: it is not marketing to the lead).

        Raises:
            RenderError: Naming the template file and line (a
                :class:`TemplateRenderError` whenever the file is known).
        """
        return self.render_compiled(
            self.load(name, locale),
            locale,
            context,
            received,
            preferred=preferred,
            internal=internal,
        )

    def render_compiled(
        self,
        compiled: _Compiled,
        locale: str | None,
        context: Mapping[str, Any],
        received: frozenset[str] = frozenset(),
        *,
        preferred: frozenset[str] = frozenset(),
        internal: bool = False,
    ) -> RenderedEmail:
        """Render an already compiled template (see :meth:`render`)."""
        variables = self._variables(context)
        state = self._state(compiled, locale, variables, received, preferred)
        variables["content"] = state.content
        variables["text_as_html"] = state.text_as_html
        current = compiled.path
        try:
            raw_subject = _block(compiled.text, "subject", variables)
            subject = self._subject(raw_subject, compiled)
            state.next_block()
            body = _clean_text(_block(compiled.text, "text", variables))
            if not body:
                raise TemplateRenderError(
                    compiled.path,
                    compiled.block_lines.get("text", 0),
                    "the text block produced no text for this lead",
                    "write the email in {% block text %}; if everything in it is inside "
                    "{% if %}, add an {% else %} with text for everyone else",
                )
            state.body = body
            if internal:
                return RenderedEmail(
                    subject=subject,
                    text=wrap_text(f"{body}\n"),
                    html=None,
                    template_path=compiled.path,
                    content_ids=(),
                )
            current = compiled.layout_path
            footer = _clean_text(_block(compiled.layout_text, "text_footer", variables))
            unwrapped = f"{body}\n\n{footer}\n"
            html: str | None = None
            if compiled.html is not None and compiled.layout_html is not None:
                current = compiled.path
                state.next_block()
                html_body = Markup(_block(compiled.html, "html", variables).strip())
                current = compiled.layout_path
                html_footer = Markup(_block(compiled.layout_html, "html_footer", variables).strip())
                document = {
                    **variables,
                    "body": html_body,
                    "footer": html_footer,
                    "subject": subject,
                    "lang": compiled.lang,
                }
                html = _block(compiled.layout_html, "html_document", document).strip() + "\n"
        except TemplateRenderError:
            raise
        except Exception as exc:
            problem = explain(exc, variables, state.empty_calls, current)
            raise TemplateRenderError(
                problem.file, problem.line, problem.message, problem.fix
            ) from exc
        # The footer check reads the text before wrapping: a postal address longer
        # than a line is still shown, on two lines.
        self._check_footer(compiled, variables, unwrapped, html)
        return RenderedEmail(
            subject=subject,
            # Wrapped here, once for the whole text part (email and footer), rather
            # than by a wordwrap filter in every template: see plaintext.py.
            text=wrap_text(unwrapped),
            html=html,
            template_path=compiled.path,
            content_ids=tuple(state.ids),
            found_nothing=tuple(state.empty_calls),
        )

    def _state(
        self,
        compiled: _Compiled,
        locale: str | None,
        variables: Mapping[str, Any],
        received: frozenset[str],
        preferred: frozenset[str],
    ) -> _RenderState:
        """What ``content()`` picks from for this email."""
        lead = variables.get("lead")
        # Content follows the language of the template actually used, so an English
        # fallback email for a Finnish lead never carries a Finnish piece.
        wanted = normalize_locale(locale) or self.default_locale
        content_locale = (
            wanted if wanted.lower().startswith(compiled.lang.lower()) else compiled.lang
        )
        return _RenderState(
            self.content,
            lead if isinstance(lead, Mapping) else {},
            content_locale,
            received,
            preferred,
        )

    def _variables(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The globals and the context, with the parts every template may read."""
        variables = {**self._globals, **context}
        lead = variables.get("lead")
        if isinstance(lead, Mapping) and "attributes" not in lead:
            # Every lead has attributes, possibly none: `lead.attributes.x is defined`
            # must work for a lead the CRM sent without any.
            variables["lead"] = {**lead, "attributes": {}}
        event = variables.get("event")
        if isinstance(event, Mapping) and "data" not in event:
            variables["event"] = {**event, "data": {}}
        return variables

    def _subject(self, raw: str, compiled: _Compiled) -> str:
        line = compiled.block_lines.get("subject", 0)
        subject = raw.strip()
        if _LINE_BREAK.search(subject):
            raise TemplateRenderError(
                compiled.path,
                line,
                "the subject has a line break (from the template or the lead's data); a "
                "line break in a subject could add mail headers, so it is refused",
                "keep {% block subject %} on one line; if a lead field brings the break, "
                "fix the lead in the CRM",
            )
        subject = " ".join(subject.split())
        if _CONTROL.search(subject):
            raise TemplateRenderError(
                compiled.path, line, "the subject has a control character", "remove it"
            )
        if not subject:
            raise TemplateRenderError(
                compiled.path,
                line,
                "the subject is empty for this lead",
                "write a subject in {% block subject %}, with text outside any {% if %}",
            )
        return subject

    def _check_footer(
        self,
        compiled: _Compiled,
        variables: Mapping[str, Any],
        text: str,
        html: str | None,
    ) -> None:
        """Refuse an email whose footer lost the unsubscribe link (law and contract)."""
        url = variables.get("unsubscribe_url")
        address = variables.get("postal_address")
        fix = (
            "the layout's text_footer and html_footer must show {{ unsubscribe_url }} "
            "and {{ postal_address }}"
        )
        if isinstance(url, str) and url and url not in text:
            raise TemplateRenderError(
                compiled.layout_path, 0, "the text footer has no unsubscribe link", fix
            )
        if isinstance(address, str) and address and address.strip() not in text:
            raise TemplateRenderError(
                compiled.layout_path, 0, "the text footer has no postal address", fix
            )
        if html is not None and isinstance(url, str) and url and str(escape(url)) not in html:
            raise TemplateRenderError(
                compiled.layout_path, 0, "the HTML footer has no unsubscribe link", fix
            )


def _block(template: Template, name: str, variables: dict[str, Any]) -> str:
    """Render one block of a template with ``variables`` (globals already merged in).

    ``shared=True`` hands the dict to the context as it is instead of copying it with
    the environment's globals for every block: the caller merged them once per
    render. Blocks never write into it (``{% set %}`` goes to the block's own scope).
    """
    context = template.new_context(variables, shared=True)
    return "".join(template.blocks[name](context))


def _clean_text(text: str) -> str:
    """Strip trailing spaces per line, collapse 3+ line breaks into one blank line."""
    lines = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", lines).strip("\n")
