"""Explanations of template mistakes, in plain words with the fix.

The renderer (:mod:`worker.rendering.renderer`) sends email and stays lean; when a
render fails, or when ``nurture validate`` checks a template
(:mod:`worker.rendering.check`), the error goes through here to become a
:class:`~worker.errors.Problem`: the template file and line, what is wrong and what to
write instead ("`lead.first_nme` is not something a lead has — did you mean
`first_name`?").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from jinja2 import Template, TemplateNotFound, TemplateSyntaxError, Undefined
from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS  # type: ignore[attr-defined]
from jinja2.exceptions import SecurityError
from jinja2.utils import missing

from worker.content import ContentItem
from worker.errors import ContentCallError, HelperCallError, Problem, did_you_mean
from worker.senders import OWNER_FIELDS

LEAD_FIELDS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "locale",
    "timezone",
    "source",
    *OWNER_FIELDS,
    "attributes",
)
EVENT_FIELDS = ("id", "type", "occurred_at", "data")
CONTEXT_NAMES = (
    "lead",
    "event",
    "sequence",
    "step",
    "unsubscribe_url",
    "postal_address",
    "sender",
    "content",
)


_TAGS = (
    "if", "elif", "else", "endif", "for", "endfor", "set", "endset", "block", "endblock",
    "include", "import", "from", "macro", "endmacro", "call", "endcall", "filter",
    "endfilter", "with", "endwith", "raw", "endraw",
)  # fmt: skip
_QUOTED = re.compile(r"'([^']+)'")


def syntax_fix(message: str) -> str:
    """A suggestion for a Jinja syntax error message, in plain words."""
    lowered = message.lower()
    quoted = _QUOTED.findall(message)
    if "no filter named" in lowered and quoted:
        known = sorted({*DEFAULT_FILTERS, "first_name"})
        return (
            f"{did_you_mean(quoted[0], known)}filters that exist include default, upper, lower, "
            "title, trim, join, first_name; see docs/templates.md"
        )
    if "no test named" in lowered and quoted:
        return (
            f"{did_you_mean(quoted[0], DEFAULT_TESTS)}tests that exist include defined, none, "
            "number, string"
        )
    if "unknown tag" in lowered and quoted and quoted[0] not in _TAGS:
        hint = did_you_mean(quoted[0], _TAGS)
        if hint:
            return f"{hint}tags are if/elif/else/endif, for/endfor, set and block/endblock"
    if "looking for" in lowered:
        for opener, closer in (("if", "endif"), ("for", "endfor"), ("macro", "endmacro")):
            if f"'{closer}'" in lowered:
                return (
                    f"a {{% {opener} %}} is not closed: add {{% {closer} %}} where it should "
                    "end (before the {% endblock %})"
                )
    if "unknown tag" in lowered and quoted:
        return (
            f"{did_you_mean(quoted[0], _TAGS)}tags are if/elif/else/endif, for/endfor, set and "
            "block/endblock"
        )
    if "unexpected end of template" in lowered:
        return (
            "a tag was opened but not closed: every {% if %} needs {% endif %}, every "
            "{% for %} {% endfor %} and every {% block %} {% endblock %}"
        )
    if "expected 'end of statement block'" in lowered or "unexpected '}'" in lowered:
        return "close the tag with %}; variables are written {{ name }} and tags {% if ... %}"
    if "expected 'end of print statement'" in lowered:
        return "close the variable with }}; text between {{ and }} must be one expression"
    if "defined twice" in lowered:
        return "each block (subject, text, html) may appear once; remove the second one"
    return "fix the line; variables are written {{ name }} and tags {% if ... %}"


def _find_path(target: object, variables: Mapping[str, Any]) -> str | None:
    """The dotted path (``lead.attributes``) under which ``target`` sits in the context."""
    queue: list[tuple[str, object, int]] = [(k, v, 0) for k, v in variables.items()]
    while queue:
        path, value, depth = queue.pop(0)
        if value is target:
            return path
        if depth < 4 and isinstance(value, Mapping):
            queue.extend((f"{path}.{k}", v, depth + 1) for k, v in value.items())
    return None


def _undefined_in(tb: TracebackType | None) -> Undefined | None:
    """The undefined value whose use raised, from the innermost frame that has one."""
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Undefined):
            found = candidate
        tb = tb.tb_next
    return found


def _template_frame(tb: TracebackType | None) -> tuple[str | None, int]:
    """File and template line of the innermost template frame of a traceback."""
    file, line = None, 0
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template) and template.filename:
            file = template.filename
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return file, line


def describe_undefined(
    undefined: Undefined, variables: Mapping[str, Any], empty_calls: list[str]
) -> tuple[str, str]:
    """A plain-words message and fix for a variable a template used but that is missing.

    Returns:
        ``(message, fix)``.
    """
    obj = undefined._undefined_obj
    name = str(undefined._undefined_name)
    hint = undefined._undefined_hint
    if hint and "unsafe" in hint:
        return (
            f"`{name}` cannot be used in an email template ({hint})",
            "use only the lead's fields, the event's data and the helpers described in "
            "docs/templates.md",
        )
    if obj is None:
        if empty_calls:
            call = empty_calls[-1]
            return (
                f"{call} found nothing left for this lead, and `.{name}` was used on it "
                "without a check",
                f"add a fallback: {{% set item = {call} %}}{{% if item %}}…{{{{ item.{name} }}}}…"
                "{% else %}text for leads who have seen every piece{% endif %}",
            )
        return (
            f"`.{name}` was used on an empty value (None)",
            "check the value first with {% if ... %} and add a fallback in {% else %}",
        )
    if isinstance(obj, ContentItem):
        fields = "id, kind, title, summary, outcome, url, locale, tags, quote, author"
        return (
            f"content piece `{obj.id}` has no `{name}` ({obj.file}:{obj.line})",
            f"{did_you_mean(name, fields.split(', '))}content pieces have {fields}; guard optional "
            f"ones: {{% if item.{name} is defined %}}",
        )
    if obj is missing:
        names = sorted(set(CONTEXT_NAMES) | {k for k in variables if not k.startswith("_")})
        return (
            f"`{name}` is not defined in email templates",
            f"{did_you_mean(name, names)}templates can use {', '.join(CONTEXT_NAMES[:-1])} and "
            "content(...); write lead.first_name rather than first_name",
        )
    return _describe_lookup(name, _find_path(obj, variables), type(obj).__name__)


def _describe_lookup(name: str, path: str | None, kind: str) -> tuple[str, str]:
    """Message and fix for ``<path>.<name>`` missing, by what ``path`` is in the context.

    Args:
        name: The attribute or key that was looked up.
        path: Where the value it was looked up on sits (``lead``, ``event.data``...).
        kind: The type of that value, for the message when the path is unknown.
    """
    full = f"{path}.{name}" if path else name
    if path == "lead":
        if name in LEAD_FIELDS:
            example = "there" if name == "first_name" else "…"
            return (
                f"`lead.{name}` may be missing for some leads",
                f"write {{{{ lead.{name} | default('{example}') }}}} or wrap it in "
                f"{{% if lead.{name} is defined %}}…{{% endif %}}",
            )
        return (
            f"`lead.{name}` is not something a lead has — known fields: {', '.join(LEAD_FIELDS)}",
            f"{did_you_mean(name, LEAD_FIELDS)}CRM fields of your own are under "
            f"lead.attributes, e.g. lead.attributes.{name}",
        )
    if path == "lead.attributes" or (path or "").startswith("lead.attributes."):
        return (
            f"`{full}` may be missing for some leads (attributes are whatever the CRM sent)",
            f"write {{{{ {full} | default('…') }}}} or wrap it in "
            f"{{% if {full} is defined %}}…{{% endif %}}",
        )
    if path == "event":
        return (
            f"`event.{name}` is not something an event has — known: {', '.join(EVENT_FIELDS)}",
            f"{did_you_mean(name, EVENT_FIELDS)}data sent with the event is under event.data, "
            f"e.g. event.data.{name}",
        )
    if path is not None and (path == "event.data" or path.startswith("event.data.")):
        return (
            f"`{full}` is not guaranteed by the sequence's trigger, so some events lack it",
            f"write {{{{ {full} | default('…') }}}} or wrap it in "
            f"{{% if {full} is defined %}}…{{% endif %}} (or require it in the "
            "trigger's `when:`, e.g. `" + full.removeprefix("event.") + ": {exists: true}`)",
        )
    if path in ("sequence", "step"):
        known = "id, description" if path == "sequence" else "id"
        return (f"`{full}` does not exist — {path} has {known}", f"use {path}.id")
    return (
        f"`{full}` does not exist (it was looked up on a {kind} value)",
        "check the spelling, or guard it with {% if ... is defined %}",
    )


def explain(
    exc: BaseException,
    variables: Mapping[str, Any],
    empty_calls: list[str],
    fallback_file: str,
) -> Problem:
    """Explain any exception raised while rendering a template.

    Args:
        exc: The exception, with its traceback (the template frame gives the line).
        variables: The render's variables (to find where a missing value was looked up).
        empty_calls: ``content(...)`` calls that found nothing, in order.
        fallback_file: The template being rendered, when no template frame is found.

    Returns:
        The problem: template file and line, message and fix.
    """
    file, line = _template_frame(exc.__traceback__)
    if isinstance(exc, TemplateSyntaxError):
        # From an {% include %} or {% import %} compiled while rendering.
        return Problem(
            exc.filename or file or fallback_file,
            exc.lineno,
            f"template syntax error: {exc.message}",
            syntax_fix(exc.message or ""),
        )
    file = os.path.normpath(file) if file else fallback_file
    if isinstance(exc, (ContentCallError, HelperCallError)):
        return Problem(file, line, exc.message, exc.fix)
    undefined = _undefined_in(exc.__traceback__)
    if undefined is not None:
        message, fix = describe_undefined(undefined, variables, empty_calls)
        return Problem(file, line, message, fix)
    if isinstance(exc, SecurityError):
        return Problem(
            file,
            line,
            f"this is not allowed in an email template: {exc}",
            "use only the lead's fields, the event's data and the helpers in docs/templates.md",
        )
    if isinstance(exc, TemplateNotFound):
        return Problem(
            file, line, f"template `{exc.name}` was not found", "check the name in {% include %}"
        )
    return Problem(
        file,
        line,
        f"{type(exc).__name__}: {exc}",
        "check the expression on this line (for example text mixed with numbers, or a "
        "filter given the wrong kind of value)",
    )
