"""Template checks behind ``nurture validate``.

Marketing ops write the emails; a mistake must show up here, with the file, the line
and what to do, before a single email goes out. For every template a sequence step
uses, and for every locale variant of it, this module:

* checks the file exists at the top level (the fallback every lead can reach),
* parses it and checks its blocks (``subject``, ``text``, optional ``html``),
* renders it the way the worker will — sandboxed, with missing variables as errors —
  for a minimal lead (only what the trigger guarantees), a full sample lead, and a
  lead who has already received every content piece (so ``content()`` finds nothing),
  and for decline sequences once per fit-rule reason and once without a reason,
* and checks the layouts (``_layout.j2``) carry the postal address and unsubscribe link.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError, nodes
from markupsafe import Markup

from worker.content import ContentLibrary, normalize_locale
from worker.errors import Problem, did_you_mean
from worker.rendering.explain import LEAD_FIELDS, explain, syntax_fix
from worker.rendering.renderer import (
    EMAIL_BLOCKS,
    LAYOUT,
    LAYOUT_BLOCKS,
    Renderer,
    TemplateRenderError,
    is_locale_dir,
)
from worker.sequences import Catalog, Sequence, Step

MAX_SUBJECT = 150
# Sentinels that cannot occur in real text, to see whether a footer shows them.
_URL_SENTINEL = "https://unsubscribe.invalid/check-token"
_ADDRESS_SENTINEL = "Postal Address Sentinel 1, 0000 Nowhere"
_BODY_SENTINEL = "<!-- nurture:body -->"
_FOOTER_SENTINEL = "<!-- nurture:footer -->"
_DOCUMENT_TAGS = re.compile(r"<\s*(!doctype|html|body|head)\b", re.IGNORECASE)
# Block names people reach for, and the block they mean.
_BLOCK_ALIASES = {
    "body": "text",
    "content": "text",
    "plain": "text",
    "plaintext": "text",
    "message": "text",
    "txt": "text",
    "title": "subject",
    "subj": "subject",
    "heading": "subject",
    "html_body": "html",
    "htmlbody": "html",
    "rich": "html",
}


class _Permissive(dict[str, Any]):
    """Sample for a value a trigger only says *exists* (``data.referrer: {exists: true}``).

    Any key of it reads as sample text, so ``event.data.referrer.name`` checks out
    without the check inventing which keys the CRM sends.
    """

    def __missing__(self, key: str) -> str:
        return "Sample"


SAMPLE_ATTRIBUTES: dict[str, Any] = {
    "industry": "saas",
    "problem": "churn",
    "budget": 5000,
    "team_size": 25,
}
SAMPLE_DATA: dict[str, Any] = {
    "referrer": {"name": "Ole Holm", "company": "Holm & Co", "relationship": "strong"},
}


def check_templates(
    catalog: Catalog,
    templates_dir: Path,
    content: ContentLibrary | None,
    locales: Iterable[str] = (),
) -> list[Problem]:
    """Every problem with the templates the catalog's sequences use.

    Args:
        catalog: The loaded sequences and fit rules.
        templates_dir: The ``templates/`` directory.
        content: The content library ``content()`` picks from (None: finds nothing).
        locales: Locales to check besides the locale folders found under
            ``templates_dir`` (a locale without a folder falls back and is covered).

    Returns:
        Problems sorted by file and line; empty when every template is fine.
    """
    templates_dir = Path(templates_dir)
    renderer = Renderer(templates_dir, content=content)
    found: set[Problem] = set()
    if not templates_dir.is_dir():
        return [
            Problem(
                str(templates_dir),
                0,
                "the templates folder does not exist",
                "create it, or point NURTURE_TEMPLATES_DIR at the folder with your .j2 files",
            )
        ]
    locale_dirs = sorted(
        {p.name for p in templates_dir.iterdir() if p.is_dir() and is_locale_dir(p.name)}
        | {loc for loc in (normalize_locale(x) for x in locales) if loc and is_locale_dir(loc)}
    )
    found.update(_check_layouts(renderer, locale_dirs))
    uses: dict[str, list[tuple[Sequence, Step]]] = {}
    for sequence in catalog.sequences.values():
        for step in sequence.steps:
            if step.webhook is not None:
                continue  # posts JSON, renders no template
            uses.setdefault(step.template, []).append((sequence, step))
            for variant in step.variants:
                if variant.template is not None:
                    as_step = replace(step, template=variant.template, line=variant.line)
                    uses.setdefault(variant.template, []).append((sequence, as_step))
    known = _template_names(templates_dir)
    reasons = sorted(
        {str(rule.reason) for rule in catalog.fit_rules if getattr(rule, "reason", None)}
    )
    for name in sorted(uses):
        variants: list[tuple[str | None, str]] = []
        if (templates_dir / f"{name}.j2").is_file():
            variants.append((None, f"{name}.j2"))
        else:
            for sequence, step in uses[name]:
                found.add(
                    _missing_template(
                        renderer, name, sequence.file, step.line, step.id, known, locale_dirs
                    )
                )
        variants += [
            (loc, f"{loc}/{name}.j2")
            for loc in locale_dirs
            if (templates_dir / loc / f"{name}.j2").is_file()
        ]
        for locale, relative in variants:
            found.update(_check_variant(renderer, relative, locale, uses[name], reasons, content))
    for ref in catalog.left_out_templates:
        if ref.template not in uses and not (templates_dir / f"{ref.template}.j2").is_file():
            found.add(
                _missing_template(
                    renderer, ref.template, ref.file, ref.line, ref.step, known, locale_dirs
                )
            )
    return sorted(found)


def _template_names(templates_dir: Path) -> list[str]:
    """Every email name under the top level (no locale folders, no _ files)."""
    names = []
    for path in templates_dir.rglob("*.j2"):
        relative = path.relative_to(templates_dir)
        if any(part.startswith("_") for part in relative.parts):
            continue
        if len(relative.parts) > 1 and is_locale_dir(relative.parts[0]):
            continue
        names.append(relative.with_suffix("").as_posix())
    return sorted(names)


def _missing_template(
    renderer: Renderer,
    name: str,
    file: str,
    line: int,
    step_id: str,
    known: list[str],
    locale_dirs: list[str],
) -> Problem:
    expected = renderer.display(f"{name}.j2")
    only_in = [
        loc for loc in locale_dirs if (renderer.templates_dir / loc / f"{name}.j2").is_file()
    ]
    close = did_you_mean(name, known, cutoff=0.8, n=3).strip()
    parts = []
    if close:
        parts.append(close)
    if only_in:
        parts.append(
            f"it exists only in {', '.join(only_in)}/; create {expected} too, since leads "
            "in every other language fall back to it"
        )
    elif close:
        parts.append(f"otherwise create {expected}")
    else:
        parts.append(
            f"create {expected}"
            + (f" (templates that exist: {', '.join(known[:8])})" if known else "")
        )
    fix = "; ".join(parts)
    return Problem(
        file, line, f"step `{step_id}` uses template `{name}`, but {expected} does not exist", fix
    )


# --------------------------------------------------------------------- structure


def _structure(renderer: Renderer, relative: str) -> tuple[list[Problem], bool]:
    """Parse a variant and check its blocks; returns problems and whether to render it."""
    display = renderer.display(relative)
    try:
        source = (renderer.templates_dir / relative).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [Problem(display, 0, "the file is not UTF-8 text", "save it as UTF-8")], False
    try:
        tree = renderer.parse(source, relative)
    except TemplateSyntaxError as exc:
        return [
            Problem(
                display,
                exc.lineno,
                f"template syntax error: {exc.message}",
                syntax_fix(exc.message or ""),
            )
        ], False
    problems, blocks, renderable = _top_level(display, tree)
    missing = _missing_blocks(display, blocks)
    problems += missing
    problems += _unknown_filters_and_tests(renderer, display, tree)
    if "html" in blocks:
        problems += _document_tags(display, tree)
    return problems, renderable and not missing


def _top_level(display: str, tree: nodes.Template) -> tuple[list[Problem], dict[str, int], bool]:
    """What sits at the top of an email template: its blocks (name -> line), problems
    with anything else there, and whether it can be rendered (not with ``extends``)."""
    problems: list[Problem] = []
    blocks: dict[str, int] = {}
    renderable = True
    for node in tree.body:
        if isinstance(node, nodes.Block):
            blocks[node.name] = node.lineno
            if node.name not in EMAIL_BLOCKS:
                meant = _BLOCK_ALIASES.get(node.name.lower()) or next(
                    iter(difflib.get_close_matches(node.name, EMAIL_BLOCKS, n=1, cutoff=0.6)),
                    None,
                )
                problems.append(
                    Problem(
                        display,
                        node.lineno,
                        f"unknown block `{node.name}`: an email has the blocks subject, text "
                        "and html, so this one is never sent",
                        (f"rename it to {{% block {meant} %}}; " if meant else "")
                        + "the plain-text email goes in {% block text %}, the HTML version "
                        "in {% block html %}",
                    )
                )
        elif isinstance(node, nodes.Extends):
            problems.append(
                Problem(
                    display,
                    node.lineno,
                    "emails do not extend another template: the layout (_layout.j2) with "
                    "the footer is added automatically",
                    "remove the {% extends %} line and write the blocks subject, text "
                    "(and html) in this file",
                )
            )
            renderable = False
        elif isinstance(node, nodes.Output):
            if _has_content(node):
                problems.append(
                    Problem(
                        display,
                        node.lineno,
                        "text outside a block is never sent",
                        "move it inside {% block text %} (and {% block html %} if there is "
                        "one), or delete it; use {# ... #} for notes",
                    )
                )
        else:
            tag = type(node).__name__.lower()
            problems.append(
                Problem(
                    display,
                    node.lineno,
                    f"a {{% {_TAG_NAMES.get(tag, tag)} %}} outside the blocks has no effect "
                    "in the email",
                    "move it inside each block that needs it ({% block text %}, "
                    "{% block html %}, {% block subject %})",
                )
            )
    return problems, blocks, renderable


def _missing_blocks(display: str, blocks: dict[str, int]) -> list[Problem]:
    """The required blocks (subject, text) a template lacks, pointing at a misnamed one."""
    problems: list[Problem] = []
    for needed in ("subject", "text"):
        if needed not in blocks:
            meant = next(
                (
                    n
                    for n in blocks
                    if _BLOCK_ALIASES.get(n.lower()) == needed
                    or difflib.get_close_matches(n, [needed], n=1, cutoff=0.6)
                ),
                None,
            )
            problems.append(
                Problem(
                    display,
                    blocks.get(meant, 1) if meant else 1,
                    f"the email has no {needed} block",
                    (
                        f"rename {{% block {meant} %}} to {{% block {needed} %}}"
                        if meant
                        else f"add {{% block {needed} %}}...{{% endblock %}}"
                    )
                    + ("" if needed == "text" else "; the subject is one line of text"),
                )
            )
    return problems


def _document_tags(display: str, tree: nodes.Template) -> list[Problem]:
    """An html block that writes its own <html>/<body> (bypassing the layout's footer)."""
    problems: list[Problem] = []
    for block in tree.find_all(nodes.Block):
        if block.name != "html":
            continue
        for data in block.find_all(nodes.TemplateData):
            match = _DOCUMENT_TAGS.search(data.data)
            if match:
                problems.append(
                    Problem(
                        display,
                        data.lineno + data.data[: match.start()].count("\n"),
                        f"the html block writes its own <{match.group(1).lower()}>: it "
                        "would bypass the layout's document and footer",
                        "keep only the message itself in {% block html %} (paragraphs, "
                        "links); the layout adds <html>, <body> and the footer with the "
                        "unsubscribe link",
                    )
                )
                break
    return problems


def _unknown_filters_and_tests(
    renderer: Renderer, display: str, tree: nodes.Template
) -> list[Problem]:
    """Filters and tests that do not exist. Jinja2 only notices them when it renders the
    line, and not at all inside an ``{% if %}`` branch that was not taken: found here by
    reading the whole template instead."""
    problems: list[Problem] = []
    env = renderer.text_env
    for kind, node_type, known in (
        ("filter", nodes.Filter, env.filters),
        ("test", nodes.Test, env.tests),
    ):
        for node in tree.find_all(node_type):
            name = node.name
            if name in known:
                continue
            usage = f"{{{{ value | {name} }}}}" if kind == "filter" else f"value is {name}"
            problems.append(
                Problem(
                    display,
                    node.lineno,
                    f"there is no {kind} named `{name}` (in `{usage}`)",
                    did_you_mean(name, sorted(known))
                    + (
                        "the helpers and the usual Jinja filters are listed in "
                        "docs/templates.md (Helpers)"
                        if kind == "filter"
                        else "use a Jinja test such as defined, none, number, string"
                    ),
                )
            )
    return problems


_TAG_NAMES = {
    "assign": "set",
    "assignblock": "set",
    "macro": "macro",
    "import": "import",
    "fromimport": "from ... import",
    "if": "if",
    "for": "for",
    "include": "include",
    "with": "with",
}


def _has_content(node: nodes.Output) -> bool:
    for child in node.nodes:
        if isinstance(child, nodes.TemplateData):
            if child.data.strip():
                return True
        else:
            return True
    return False


# --------------------------------------------------------------------- rendering


def _check_variant(
    renderer: Renderer,
    relative: str,
    locale: str | None,
    uses: list[tuple[Sequence, Step]],
    reasons: list[str],
    content: ContentLibrary | None,
) -> set[Problem]:
    problems, renderable = _structure(renderer, relative)
    found = set(problems)
    if not renderable:
        return found
    try:
        compiled = renderer.compile_file(relative)
    except TemplateRenderError as exc:
        found.add(_problem(exc))
        return found
    display = renderer.display(relative)
    subject_line = compiled.block_lines.get("subject", 0)
    everything = frozenset(item.id for item in content.items) if content else frozenset()
    for sequence, step in uses:
        for context, received in _scenarios(sequence, step, locale, reasons, everything):
            try:
                email = renderer.render_compiled(
                    compiled, locale, context, received, internal=step.notify is not None
                )
            except TemplateRenderError as exc:
                found.add(_problem(exc, sequence))
                continue
            if len(email.subject) > MAX_SUBJECT:
                found.add(
                    Problem(
                        display,
                        subject_line,
                        f"the subject is {len(email.subject)} characters long for a sample "
                        f"lead; inboxes cut it off long before {MAX_SUBJECT}",
                        f"keep it under {MAX_SUBJECT} characters (under 60 reads best)",
                    )
                )
    return found


def _problem(exc: TemplateRenderError, sequence: Sequence | None = None) -> Problem:
    message = exc.message
    if sequence is not None and "not guaranteed by the sequence's trigger" in message:
        message = message.replace(
            "the sequence's trigger",
            f"the trigger of sequence `{sequence.id}` ({sequence.file})",
        )
    return Problem(exc.file, exc.line, message, exc.fix)


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    current = target
    for part in parts[:-1]:
        nxt = current.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            current[part] = nxt
        current = nxt
    if value == "sample" and not isinstance(current.get(parts[-1]), dict):
        # `exists: true`: the CRM sends something there, shape unknown.
        value = _Permissive()
    current[parts[-1]] = value


def _guarantees(sequence: Sequence, step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for condition in (sequence.trigger_when, step.when):
        if condition is not None:
            out.update(condition.guaranteed())
    return out


#: The signing person of the full sample lead (what ``sender`` holds when known).
SAMPLE_SENDER = {
    "name": "Maria Holm",
    "title": "Partner",
    "meeting_url": "https://cal.example.com/maria",
    "email": "maria@example.com",
}


def _scenarios(
    sequence: Sequence,
    step: Step,
    locale: str | None,
    reasons: list[str],
    everything: frozenset[str],
) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """(context, received) pairs to render one variant with, for one sequence step."""
    guaranteed = _guarantees(sequence, step)
    decline = sequence.kind == "decline" or sequence.trigger_event == "lead.disqualified"
    reason_options: list[str | None] = [*reasons, None] if decline else [None]

    def build(full: bool, reason: str | None) -> dict[str, Any]:
        lead: dict[str, Any] = {"id": "sample-lead", "email": "sample@example.com"}
        data: dict[str, Any] = {}
        if locale:
            lead["locale"] = locale
        if full:
            lead.update(
                first_name="Ann",
                last_name="Berg",
                company="Berg & Co",
                timezone="Europe/Copenhagen",
                source="inbound",
                attributes=dict(SAMPLE_ATTRIBUTES),
            )
            data = {k: dict(v) if isinstance(v, dict) else v for k, v in SAMPLE_DATA.items()}
        lead.setdefault("attributes", {})
        holder = {"lead": lead, "data": data}
        for path, value in guaranteed.items():
            if path.startswith("data."):
                _set(holder, path, value)
            elif path.startswith("attributes."):
                _set(lead, path, value)
            elif path in LEAD_FIELDS and path != "locale":
                lead[path] = value
        if reason is not None:
            data["reason"] = reason
        # The signing person is there in the full sample and absent in the minimal one,
        # so both branches of a sign-off are rendered.
        sender = dict(SAMPLE_SENDER) if full else {}
        if step.notify is not None:
            # An internal email: `recipient` is whom it goes to (named when the CRM says).
            owner = {"name": "Maria Holm"} if full else {}
            return {
                "lead": lead,
                "event": {"id": "sample-event", "type": sequence.trigger_event, "data": data},
                "sequence": {"id": sequence.id, "description": sequence.description},
                "step": {"id": step.id},
                "recipient": {**owner, "email": "owner@example.com"},
                "sender": {},
                "unsubscribe_url": "",
                "postal_address": "",
            }
        return {
            "lead": lead,
            "event": {
                "id": "sample-event",
                "type": sequence.trigger_event,
                "occurred_at": "2026-01-05T09:30:00Z",
                "data": data,
            },
            "sequence": {"id": sequence.id, "description": sequence.description},
            "step": {"id": step.id},
            "unsubscribe_url": "https://example.com/unsubscribe/sample-token",
            "postal_address": "Sample Street 1, 1000 Copenhagen",
            "sender": sender,
        }

    for reason in reason_options:
        yield build(False, reason), frozenset()
        yield build(True, reason), frozenset()
    # Everything already received: every content() finds nothing.
    yield build(False, reason_options[0]), everything | {"*"}


# --------------------------------------------------------------------- layouts


_LAYOUT_SAMPLE: dict[str, Any] = {
    "lead": {"id": "sample-lead", "email": "sample@example.com", "attributes": {}},
    "event": {"id": "e", "type": "lead.created", "data": {}},
    "sequence": {"id": "sample", "description": ""},
    "step": {"id": "sample"},
    "unsubscribe_url": _URL_SENTINEL,
    "postal_address": _ADDRESS_SENTINEL,
    "content": lambda *a, **k: None,
}


def _check_layouts(renderer: Renderer, locale_dirs: list[str]) -> set[Problem]:
    """Every layout (top level and per locale folder) and its footer blocks."""
    found: set[Problem] = set()
    relatives = [f"{LAYOUT}.j2"] + [
        f"{loc}/{LAYOUT}.j2"
        for loc in locale_dirs
        if (renderer.templates_dir / loc / f"{LAYOUT}.j2").is_file()
    ]
    if not (renderer.templates_dir / relatives[0]).is_file():
        found.add(
            Problem(
                renderer.display(relatives[0]),
                0,
                "there is no layout, so no email can carry the footer (postal address and "
                "unsubscribe link) and none will be sent",
                f"create {renderer.display(relatives[0])} with the blocks text_footer, "
                "html_footer and html_document (see docs/templates.md)",
            )
        )
        relatives = relatives[1:]
    for relative in relatives:
        found.update(_check_layout(renderer, relative))
    return found


def _check_layout(renderer: Renderer, relative: str) -> list[Problem]:
    """One layout: it parses, has its blocks, and each block shows what it must."""
    display = renderer.display(relative)
    try:
        text_tpl = renderer.text_env.get_template(relative)
        html_tpl = renderer.html_env.get_template(relative)
    except TemplateSyntaxError as exc:
        message = f"template syntax error: {exc.message}"
        return [Problem(display, exc.lineno, message, syntax_fix(exc.message or ""))]
    missing = [b for b in LAYOUT_BLOCKS if b not in text_tpl.blocks]
    if missing:
        return [
            Problem(
                display,
                1,
                f"the layout has no {block} block",
                f"add {{% block {block} %}}...{{% endblock %}}; see docs/templates.md",
            )
            for block in missing
        ]
    document = {
        "body": Markup(_BODY_SENTINEL),
        "footer": Markup(_FOOTER_SENTINEL),
        "subject": "Sample subject",
        "lang": relative.split("/")[0] if "/" in relative else "en",
    }
    parts: dict[str, tuple[Template, dict[str, Any]]] = {
        "text_footer": (text_tpl, {}),
        "html_footer": (html_tpl, {}),
        "html_document": (html_tpl, document),
    }
    problems: list[Problem] = []
    for block, (tpl, extra) in parts.items():
        try:
            output = "".join(tpl.blocks[block](tpl.new_context({**_LAYOUT_SAMPLE, **extra})))
        except Exception as exc:
            problems.append(explain(exc, _LAYOUT_SAMPLE, [], display))
            continue
        line = renderer.block_line(relative, block)
        problems += _missing_in_layout_block(display, line, block, output)
    return problems


def _missing_in_layout_block(display: str, line: int, block: str, output: str) -> list[Problem]:
    """What a rendered layout block fails to show: footers need the unsubscribe link and
    the postal address, the document needs the email's body and the footer."""
    if block in ("text_footer", "html_footer"):
        return [
            Problem(
                display,
                line,
                f"the {block} block does not show the {label}",
                f"add {{{{ {var} }}}} to it; every email must carry it",
            )
            for label, needle, var in (
                ("unsubscribe link", _URL_SENTINEL, "unsubscribe_url"),
                ("postal address", _ADDRESS_SENTINEL, "postal_address"),
            )
            if needle not in output
        ]
    return [
        Problem(
            display,
            line,
            f"the html_document block does not show {{{{ {var} }}}}",
            f"add {{{{ {var} }}}} inside <body>: it is "
            + (
                "the email's html block"
                if var == "body"
                else "the html_footer with the unsubscribe link"
            ),
        )
        for needle, var in ((_BODY_SENTINEL, "body"), (_FOOTER_SENTINEL, "footer"))
        if needle not in output
    ]
