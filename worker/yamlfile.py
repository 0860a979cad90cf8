"""One reader for every YAML file marketers and operators edit.

Sequences and fit rules (``sequences/*.yaml``), the content library
(``content/*.yaml``) and the CRM mappings (``crm/*.yaml``) are all read here, so a
mistake in any of them is reported the same way: a :class:`~worker.errors.Problem` with
the file as the user would type it, the line, and the fix in plain words. The document
comes back as ruamel's round-trip nodes, which remember where each key and list item
is (:func:`yaml_line`, :func:`node_line`), so the checks that follow can point at the
line of the mistake too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from worker.errors import Problem, did_you_mean
from worker.events import BUILTIN_TYPES, EVENT_TYPE

# Fragments of ruamel's parser messages, what they mean, and the fix.
_YAML_HINTS = (
    (
        "mapping values are not allowed",
        "a ':' appears where YAML does not expect one",
        "put quotes around text that contains ': ' (e.g. description: \"Note: read this\"), "
        "and check the indentation of this line",
    ),
    (
        "could not find expected ':'",
        "a line is missing its ':' or is indented wrongly",
        "write `key: value`, and check the indentation: lines of the same block start "
        "in the same column",
    ),
    (
        "expected <block end>",
        "the indentation does not line up",
        "keys of the same block must start in the same column; use spaces, not tabs",
    ),
    (
        "expected a single document",
        "the file holds more than one document (a second ---)",
        "keep one sequence per file; move the rest into a new file",
    ),
    (
        "expected ',' or '}'",
        "a { ... } is not closed properly",
        "check that every { has a matching } and that items are separated by commas",
    ),
    (
        "expected ',' or ']'",
        "a [ ... ] is not closed properly",
        "check that every [ has a matching ] and that items are separated by commas",
    ),
    (
        "that cannot start any token",
        "a value starts with a character YAML reserves",
        'put the value in quotes, e.g. template: "@special"',
    ),
    (
        "found unexpected end of stream",
        "a quote is not closed",
        "close the quotes (\" or ') opened on this line",
    ),
)


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(raw: bytes, file: str, docs: str) -> tuple[Any, list[Problem]]:
    """Parse one file's bytes into ruamel round-trip nodes (which know their lines).

    Args:
        raw: The file's content.
        file: The file as shown in problems (see :func:`display_path`).
        docs: Where the format is described, for the fix of an unreadable file
            (e.g. ``"see docs/sequences.md"``).

    Returns:
        The document (None for an empty file or when it cannot be read) and the
        problems that stopped it from being read.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [
            Problem(file, line, "the file is not UTF-8 text", "save it as UTF-8 in your editor")
        ]
    problems = [
        Problem(
            file,
            number,
            "this line is indented with a tab",
            "YAML needs spaces: replace the tab with spaces (2 per level)",
        )
        for number, line_text in enumerate(text.splitlines(), start=1)
        if "\t" in line_text[: len(line_text) - len(line_text.lstrip(" \t"))]
    ]
    if problems:
        return None, problems
    try:
        return YAML(typ="rt").load(text), []
    except MarkedYAMLError as exc:
        return None, [_syntax_problem(exc, text, file)]
    except YAMLError as exc:  # no position known
        return None, [Problem(file, 0, f"this is not valid YAML: {exc}", f"check it; {docs}")]


def _syntax_problem(exc: MarkedYAMLError, source: str, file: str) -> Problem:
    """A parser error in plain words, at its line."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    text = f"{exc.context or ''} {exc.problem or ''}"
    duplicate = re.search(r'found duplicate key "(.*?)"', text)
    if duplicate and mark is not None:
        key = duplicate.group(1)
        return Problem(
            file,
            line,
            f"this is not valid YAML: {key!r} appears twice in the same block",
            "remove one of the two and keep only one"
            + _earlier_key(source, key, mark.line, mark.column),
        )
    for needle, message, fix in _YAML_HINTS:
        if needle in text:
            return Problem(file, line, f"this is not valid YAML: {message}", fix)
    return Problem(
        file,
        line,
        f"this is not valid YAML ({(exc.problem or '').strip()})",
        "check the indentation (spaces, same column for keys of one block) and put "
        "quotes around values containing ':' or '#'",
    )


def _earlier_key(source: str, key: str, line: int, column: int) -> str:
    """ "; the other is at line N" for the first ``key:`` at ``column`` above ``line``."""
    lines = source.splitlines()
    for number in range(min(line, len(lines)) - 1, -1, -1):
        text = lines[number]
        if text[:column].strip() == "" and re.match(rf"{re.escape(key)}\s*:", text[column:]):
            return f"; the other is at line {number + 1}"
    return ""


def yaml_line(node: Any, key: Any, default: int) -> int:
    """The line of a mapping key or list item, from ruamel's line/column data.

    Args:
        node: A ruamel ``CommentedMap``/``CommentedSeq``, or anything else.
        key: The mapping key or list index.
        default: Returned when the node carries no position (e.g. a plain dict).
    """
    lc = getattr(node, "lc", None)
    if lc is None:
        return default
    try:
        position = lc.item(key) if isinstance(node, list) else lc.key(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return default
    if not position:
        return default
    return int(position[0]) + 1


def node_line(node: Any, default: int = 1) -> int:
    """The line where a mapping or list starts (``default`` for a plain value)."""
    lc = getattr(node, "lc", None)
    return int(lc.line) + 1 if lc is not None and lc.line is not None else default


def path_line(node: Any, path: tuple[Any, ...], default: int = 1) -> int:
    """The line of the deepest part of ``path`` (keys and list indexes) found in ``node``.

    Used to place an error reported by location, e.g. pydantic's ``("events", 0, "type")``.
    """
    line = node_line(node, default)
    for part in path:
        found = isinstance(node, Mapping) and part in node
        if isinstance(node, list) and isinstance(part, int):
            found = 0 <= part < len(node)
        if not found:
            break
        line = yaml_line(node, part, line)
        node = node[part]
    return line


def describe_node(node: Any) -> str:
    """What a value is, for "must be a list, not ..." messages."""
    if node is None:
        return "nothing"
    if isinstance(node, Mapping):
        return "a set of keys"
    if isinstance(node, list):
        return "a list"
    return repr(node)


def plain(node: Any) -> Any:
    """Round-trip nodes as plain dicts, lists and scalars (for pydantic and JSON)."""
    if isinstance(node, Mapping):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def event_type_problem(value: Any) -> tuple[str, str] | None:
    """``(message, fix)`` when ``value`` cannot be an event type, else None.

    Shared by sequences (``trigger``, ``exit_on``) and CRM mappings (a rule's ``type``):
    an event type is a lowercase dotted name; one very close to a built-in type
    (``deal.wonn``) is taken for a typo, since no CRM would send it.
    """
    if isinstance(value, str) and EVENT_TYPE.match(value):
        typo = difflib.get_close_matches(value, sorted(BUILTIN_TYPES), n=1, cutoff=0.88)
        if value in BUILTIN_TYPES or not typo:
            return None
        return f"{value!r} looks like a typo of {typo[0]}", f"write {typo[0]}"
    text = str(value).strip().lower().replace(" ", ".").replace("_", ".")
    return (
        f"{value!r} is not an event type",
        f"{did_you_mean(text, sorted(BUILTIN_TYPES), code=False)}Event types are lowercase "
        "dotted names such as lead.created, lead.replied or meeting.booked",
    )
