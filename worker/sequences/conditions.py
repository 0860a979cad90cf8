"""``when`` conditions: compiled once at load time, evaluated per lead and event.

A ``when`` is a mapping of *path* to *test*; every entry must hold::

    when:
      source: {not_in: [referral, outbound]}
      attributes.budget: {gte: 1000}
      data.referrer: {exists: false}

Missing values (the path is absent, null or blank text) never raise. They make
equals, ``in``, ``lt``/``lte``/``gt``/``gte`` and ``contains`` false, and make
``not_in`` and ``exists: false`` true. A number written as text (``"800"``) compares
as a number; any other mismatch of types is simply false. Text comparison is exact
(case-sensitive) except for ``locale``, whose BCP 47 tags compare case-insensitively
(``da-dk`` equals ``da-DK``; ``da`` does not match ``da-DK``).

``any: [...]``, ``all: [...]`` and ``not: {...}`` combine conditions.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from difflib import get_close_matches
from typing import Any, Protocol, TypeAlias

from worker.errors import Problem, did_you_mean
from worker.senders import OWNER_FIELDS
from worker.sequences import engagement
from worker.sequences.engagement import Engaged
from worker.yamlfile import yaml_line

#: Lead fields a condition may name directly.
FIELDS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "locale",
    "timezone",
    "source",
    *OWNER_FIELDS,
)
#: Prefixes of open-ended paths: the lead's CRM attributes and the event's data.
PREFIXES = ("attributes", "data")
#: Operators of a test mapping; a plain value means equals.
OPERATORS = ("equals", "in", "not_in", "lt", "lte", "gt", "gte", "exists", "contains")
COMBINATORS = ("any", "all", "not")
OPERATOR_LIST = "in, not_in, lt, lte, gt, gte, exists, contains (or a plain value for equals)"
PATH_LIST = (
    "source, locale, email, company, first_name, last_name, timezone, id, "
    "attributes.NAME (the lead's CRM fields), data.NAME (the event's data), or what the "
    "lead did: clicked, opened, clicked_content, clicked_tag, replied"
)
_NUMERIC = re.compile(r"^\s*[+-]?\d+(?:\.\d+)?\s*$")
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


class LineLookup(Protocol):
    """Finds the 1-based line of ``key`` in a mapping (or index in a list) read from YAML."""

    def __call__(self, node: Any, key: Any, default: int) -> int: ...


class _Missing:
    """Marks a path that has no value (absent, null or blank text)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def lookup(ctx: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or :data:`MISSING`."""
    current: Any = ctx
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return MISSING
        current = current[part]
    if current is None or (isinstance(current, str) and not current.strip()):
        return MISSING
    return current


def _number(value: Any) -> float | None:
    """A number for comparisons: numbers and numeric text; never booleans."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return None if math.isnan(value) else float(value)
        if isinstance(value, str) and _NUMERIC.match(value):
            return float(value)
    except OverflowError:
        # An integer too large for a float (a CRM's junk): it is beyond any threshold.
        return math.inf if value > 0 else -math.inf
    return None


def _bool(value: Any) -> bool | None:
    """A boolean from true/false or the texts "true"/"false" (CRMs often send text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _equal(path: str, actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        left, right = _bool(actual), _bool(expected)
        return left is not None and left == right
    if isinstance(expected, int | float) or isinstance(actual, int | float):
        a, b = _number(actual), _number(expected)
        return a is not None and a == b
    if isinstance(actual, str) and isinstance(expected, str):
        if path == "locale":
            return actual.casefold() == expected.casefold()
        return actual == expected
    return False


@dataclass(frozen=True)
class _Test:
    """One operator applied to one path."""

    path: str
    op: str
    operand: Any  # a scalar, or a tuple of scalars for in/not_in

    def evaluate(self, ctx: Mapping[str, Any]) -> bool:
        actual = lookup(ctx, self.path)
        if self.op == "exists":
            return (actual is not MISSING) == bool(self.operand)
        if actual is MISSING:
            return self.op == "not_in"
        if self.op == "equals":
            return _equal(self.path, actual, self.operand)
        if self.op in ("in", "not_in"):
            values = actual if isinstance(actual, list) else [actual]
            found = any(_equal(self.path, v, e) for v in values for e in self.operand)
            return found if self.op == "in" else not found
        if self.op == "contains":
            if isinstance(actual, str) and isinstance(self.operand, str):
                return self.operand in actual
            if isinstance(actual, list):
                return any(_equal(self.path, v, self.operand) for v in actual)
            return False
        number = _number(actual)
        return number is not None and _COMPARISONS[self.op](number, self.operand)

    def describe(self) -> str:
        if self.op == "exists":
            return f"{self.path} {'exists' if self.operand else 'is missing'}"
        if self.op == "equals":
            return f"{self.path} is {self.operand!r}"
        if self.op in ("in", "not_in"):
            items = ", ".join(repr(v) for v in self.operand)
            return f"{self.path} {'is one of' if self.op == 'in' else 'is none of'} [{items}]"
        words = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "contains": "contains"}
        return f"{self.path} {words[self.op]} {self.operand!r}"

    def sample(self) -> Any:
        """A value that satisfies this test alone (MISSING for ``exists: false``)."""
        op, operand = self.op, self.operand
        if op == "exists":
            return "sample" if operand else MISSING
        if op == "in":
            return operand[0]
        if op == "not_in":
            candidate = "other"
            while candidate in operand:
                candidate += "-x"
            return candidate
        if op == "contains":
            return operand if isinstance(operand, str) else [operand]
        if op in ("lt", "gt"):
            step = 1 if op == "gt" else -1
            return (int(operand) if operand == int(operand) else operand) + step
        if op in ("lte", "gte"):
            return int(operand) if operand == int(operand) else operand
        return operand


@dataclass(frozen=True)
class _All:
    children: tuple[_Node, ...]

    def evaluate(self, ctx: Mapping[str, Any]) -> bool:
        return all(child.evaluate(ctx) for child in self.children)

    def describe(self) -> str:
        return " and ".join(_wrap(child) for child in self.children)


@dataclass(frozen=True)
class _Any:
    children: tuple[_Node, ...]

    def evaluate(self, ctx: Mapping[str, Any]) -> bool:
        return any(child.evaluate(ctx) for child in self.children)

    def describe(self) -> str:
        return " or ".join(_wrap(child) for child in self.children)


@dataclass(frozen=True)
class _Not:
    child: _Node

    def evaluate(self, ctx: Mapping[str, Any]) -> bool:
        return not self.child.evaluate(ctx)

    def describe(self) -> str:
        return f"not {_wrap(self.child)}"


_Node: TypeAlias = "_Test | _All | _Any | _Not | Engaged"


def _wrap(node: _Node) -> str:
    text = node.describe()
    return f"({text})" if isinstance(node, _All | _Any) and len(node.children) > 1 else text


def _failing(node: _Node, ctx: Mapping[str, Any]) -> str:
    """Words for the first false part of a false node, with the values it read."""
    if isinstance(node, _All):
        child = next(c for c in node.children if not c.evaluate(ctx))
        return _failing(child, ctx)
    if isinstance(node, _Test):
        actual = lookup(ctx, node.path)
        shown = "missing" if actual is MISSING else repr(actual)
        return f"{node.describe()} (is {shown})"
    values = ", ".join(
        f"{path}={'missing' if (v := lookup(ctx, path)) is MISSING else repr(v)}"
        for path in dict.fromkeys(_paths(node))
    )
    return f"{_wrap(node)} (values: {values})"


def _paths(node: _Node) -> list[str]:
    if isinstance(node, Engaged):
        return []
    if isinstance(node, _Test):
        return [node.path]
    if isinstance(node, _Not):
        return _paths(node.child)
    return [path for child in node.children for path in _paths(child)]


def _read(node: _Node, ctx: Mapping[str, Any]) -> list[str]:
    """The paths evaluating ``node`` reads (an ``all`` stops at its first false part)."""
    if isinstance(node, _All):
        out: list[str] = []
        for child in node.children:
            out += _read(child, ctx)
            if not child.evaluate(ctx):
                break
        return out
    return _paths(node)


def _engaged(node: _Node) -> list[Engaged]:
    if isinstance(node, Engaged):
        return [node]
    if isinstance(node, _Test):
        return []
    if isinstance(node, _Not):
        return _engaged(node.child)
    return [found for child in node.children for found in _engaged(child)]


def _set_path(ctx: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    current = ctx
    for part in parts[:-1]:
        current = current.setdefault(part, {})
    current[parts[-1]] = value


def _samples(node: _Node) -> dict[str, Any]:
    """Path -> value such that ``node`` holds; best effort for ``not``."""
    if isinstance(node, _Test):
        value = node.sample()
        return {} if value is MISSING else {node.path: value}
    if isinstance(node, _Not | Engaged):
        return {}
    if isinstance(node, _Any):
        return _samples(node.children[0])
    result: dict[str, Any] = {}
    tests: dict[str, list[_Test]] = {}
    for child in node.children:
        if isinstance(child, _Test):
            tests.setdefault(child.path, []).append(child)
    for path, group in tests.items():
        candidates = [t.sample() for t in group]
        for candidate in candidates:
            ctx: dict[str, Any] = {}
            if candidate is not MISSING:
                _set_path(ctx, path, candidate)
            if all(t.evaluate(ctx) for t in group):
                if candidate is not MISSING:
                    result[path] = candidate
                break
        else:
            # Contradictory tests (e.g. gt 10 and lt 11 on integers): offer the first.
            if candidates[0] is not MISSING:
                result[path] = candidates[0]
    for child in node.children:
        if not isinstance(child, _Test):
            for path, value in _samples(child).items():
                result.setdefault(path, value)
    return result


@dataclass(frozen=True)
class Condition:
    """A compiled ``when`` mapping; immutable and safe to share between threads.

    Attributes:
        root: The compiled expression tree.
        paths: Every path the condition reads, in the order written, without repeats.
    """

    root: _Node
    paths: tuple[str, ...]

    def engaged(self) -> list[Engaged]:
        """The engagement tests in the condition (clicked, opened, ...), in order."""
        return _engaged(self.root)

    @property
    def uses_engagement(self) -> bool:
        """Whether evaluating it needs the lead's engagement facts."""
        return bool(self.engaged())

    def matches(self, ctx: Mapping[str, Any]) -> bool:
        """Whether the condition holds for a context from :func:`condition_context`."""
        return self.root.evaluate(ctx)

    def guaranteed(self) -> dict[str, Any]:
        """Dotted path -> a sample value under which the condition holds.

        Used to build a sample lead for template checks. Paths that must be missing
        (``exists: false``) are left out; ``not`` branches contribute nothing.
        """
        return _samples(self.root)

    def failing(self, ctx: Mapping[str, Any]) -> str | None:
        """The part of the condition that is false for ``ctx``, in plain words with the
        values read (None when the condition holds): why a step or a trigger did not apply.
        """
        if self.root.evaluate(ctx):
            return None
        return _failing(self.root, ctx)

    def read_paths(self, ctx: Mapping[str, Any]) -> list[str]:
        """The paths evaluating the condition for ``ctx`` reads, in order, without
        repeats: those :meth:`failing` depends on."""
        return list(dict.fromkeys(_read(self.root, ctx)))

    def describe(self) -> str:
        """The condition in plain words, e.g. ``source is 'referral' and attributes.x >= 5``."""
        return self.root.describe()

    def __str__(self) -> str:
        return self.describe()


def condition_context(lead: Mapping[str, Any], data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The context conditions are evaluated against.

    Args:
        lead: The stored lead (fields and ``attributes``).
        data: The ``data`` of the event being handled, if any.

    Returns:
        The top-level lead fields, ``attributes`` and ``data``.
    """
    ctx: dict[str, Any] = {name: lead.get(name) for name in FIELDS}
    ctx["attributes"] = dict(lead.get("attributes") or {})
    ctx["data"] = dict(data or {})
    return ctx


def _plain(value: Any) -> Any:
    """ruamel scalars to plain Python; YAML dates to ISO text (leads carry dates as text)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    return value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | date)


def _suggest_path(key: str) -> str | None:
    """The path a marketer most likely meant by an unknown ``key``."""
    lowered = key.strip().lower()
    for prefix in ("lead.", "event."):
        if lowered.startswith(prefix):
            rest = key.strip()[len(prefix) :]
            if rest and _path_error(rest) is None:
                return rest
            if prefix == "lead." and rest and "." not in rest:
                return _suggest_path(rest)  # lead.sorce -> source; lead.budget -> attributes
    parts = key.split(".")
    if len(parts) > 1:
        near = get_close_matches(parts[0].lower(), [*PREFIXES, "attrs", "attr"], n=1, cutoff=0.6)
        if parts[0].lower() in ("attrs", "attr", "attribute", "fields") or (
            near and near[0].startswith("attr")
        ):
            return ".".join(["attributes", *parts[1:]])
        if near == ["data"]:
            return ".".join(["data", *parts[1:]])
        if all(parts):
            # e.g. referrer.name: a CRM field or event data, we cannot tell which.
            return f"attributes.{key} or data.{key}"
        return None
    engaged = get_close_matches(lowered, engagement.KINDS, n=1, cutoff=0.75)
    if engaged:
        return engaged[0]
    field = get_close_matches(lowered, FIELDS, n=1, cutoff=0.75)
    if field:
        return field[0]
    return f"attributes.{key}"


def _path_error(key: str) -> tuple[str, str] | None:
    """(message, fix) when ``key`` is not a valid path, else None."""
    if key in FIELDS:
        return None
    parts = key.split(".")
    if parts[0] in PREFIXES and len(parts) > 1 and all(parts):
        return None
    if key in PREFIXES:
        return (
            f"{key!r} needs a name after it",
            f"write one line per field, e.g. {key}.industry: saas",
        )
    if parts[0] in PREFIXES:
        return (f"{key!r} has an empty part between dots", f"write e.g. {parts[0]}.industry")
    suggestion = _suggest_path(key)
    fix = did_you_mean(key, [suggestion], cutoff=0, code=False) if suggestion else ""
    return (f"unknown field {key!r}", f"{fix}Conditions can name {PATH_LIST}")


class _Compiler:
    """Turns a ``when`` node into a tree, collecting every problem on the way."""

    def __init__(self, file: str, lines: LineLookup) -> None:
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str, fix: str) -> None:
        self.problems.append(Problem(self.file, line, message, fix))

    def mapping(
        self, node: Any, line: int, where: str = "when", scope: str = "enrollment"
    ) -> _Node | None:
        if not isinstance(node, Mapping):
            self.problem(
                line,
                f"{where} must be a list of conditions, one per line, not {_kind(node)}",
                "write e.g. `when: {attributes.industry: saas}` or put `field: value` lines "
                "indented under `when:`",
            )
            return None
        if not node:
            self.problem(
                line,
                f"{where} is empty, so it would match every lead",
                "add a condition such as `attributes.industry: saas`, or remove the empty `when`",
            )
            return None
        if "scope" in node:
            scope = self.scope(node["scope"], self.lines(node, "scope", line)) or scope
            if len(node) == 1:
                self.problem(
                    line,
                    "scope on its own tests nothing",
                    "put it next to an engagement condition, e.g. "
                    "`{clicked: case-study, scope: any}`",
                )
                return None
        children: list[_Node] = []
        for key, value in node.items():
            if key == "scope":
                continue
            key_line = self.lines(node, key, line)
            child = self.entry(key, value, key_line, scope)
            if child is not None:
                children.append(child)
        if len(children) != len(node) - ("scope" in node):
            return None
        return children[0] if len(children) == 1 else _All(tuple(children))

    def scope(self, value: Any, line: int) -> str | None:
        if value in engagement.SCOPES:
            return str(value)
        self.problem(
            line,
            f"unknown scope {value!r}",
            f"{did_you_mean(str(value), engagement.SCOPES, cutoff=0.3)}write `scope: any` (every "
            "enrollment) or leave it out (this enrollment only)",
        )
        return None

    def engaged(self, kind: str, value: Any, line: int, scope: str) -> _Node | None:
        """An engagement test: clicked/opened a step, clicked content or a tag, replied."""
        if kind == "replied":
            if not isinstance(value, bool):
                self.problem(
                    line, f"replied needs true or false, got {value!r}", "write `replied: true`"
                )
                return None
            node = Engaged(kind, "true", scope, line)
            return node if value else _Not(node)
        if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
            what = {"clicked_content": "a content id", "clicked_tag": "a tag value"}
            self.problem(
                line,
                f"{kind} needs {what.get(kind, 'the id of an earlier step')}, got {_kind(value)}",
                f"write e.g. `{kind}: "
                + {"clicked_content": "saas-churn", "clicked_tag": "churn"}.get(kind, "case-study")
                + "`",
            )
            return None
        return Engaged(kind, str(value).strip(), scope, line)

    def entry(self, key: Any, value: Any, line: int, scope: str = "enrollment") -> _Node | None:
        if not isinstance(key, str):
            self.problem(line, f"{key!r} is not a field name", f"name a field: {PATH_LIST}")
            return None
        if key in engagement.KINDS:
            return self.engaged(key, value, line, scope)
        if key in COMBINATORS:
            return self.combinator(key, value, line, scope)
        error = _path_error(key)
        if error is not None:
            message, fix = error
            if key in PREFIXES and isinstance(value, Mapping) and value:
                inner = next(iter(value))
                fix = f"write the field and its name together, e.g. {key}.{inner}: ..."
            self.problem(line, message, fix)
            return None
        return self.tests(key, value, line)

    def combinator(self, key: str, value: Any, line: int, scope: str) -> _Node | None:
        if key == "not":
            child = self.mapping(value, line, "not", scope)
            return None if child is None else _Not(child)
        if not isinstance(value, list) or not value:
            self.problem(
                line,
                f"{key} needs a list of conditions",
                f"write e.g. `{key}: [{{source: referral}}, {{data.referrer: {{exists: true}}}}]`",
            )
            return None
        children: list[_Node] = []
        for index, item in enumerate(value):
            child = self.mapping(
                item, self.lines(value, index, line), f"each entry of {key}", scope
            )
            if child is not None:
                children.append(child)
        if len(children) != len(value):
            return None
        return _Any(tuple(children)) if key == "any" else _All(tuple(children))

    def tests(self, path: str, value: Any, line: int) -> _Node | None:
        if isinstance(value, Mapping):
            if not value:
                self.problem(
                    line,
                    f"{path} has an empty test",
                    f"write a value or an operator: {OPERATOR_LIST}",
                )
                return None
            tests: list[_Node] = []
            for op, operand in value.items():
                op_line = self.lines(value, op, line)
                test = self.operator(path, op, operand, op_line)
                if test is not None:
                    tests.append(test)
            if len(tests) != len(value):
                return None
            return tests[0] if len(tests) == 1 else _All(tuple(tests))
        if isinstance(value, list):
            self.problem(
                line,
                f"{path} is followed by a list, which needs an operator",
                f"write `{path}: {{in: [...]}}` to match any of them, or `{{contains: ...}}`",
            )
            return None
        if value is None:
            self.problem(
                line,
                f"{path} has no value",
                f"write a value, or `{path}: {{exists: false}}` to match leads without it",
            )
            return None
        return _Test(path, "equals", _plain(value))

    def operator(self, path: str, op: Any, operand: Any, line: int) -> _Node | None:
        if op not in OPERATORS:
            hint = _operator_hint(op)
            if isinstance(op, str) and _path_error(op) is None:
                hint = "a field cannot sit inside another field's test; check the indentation. "
            self.problem(
                line, f"unknown operator {op!r} for {path}", f"{hint}Operators: {OPERATOR_LIST}"
            )
            return None
        if op in ("in", "not_in"):
            if not isinstance(operand, list) or not operand:
                self.problem(
                    line, f"{op} needs a list of values", f"write e.g. `{op}: [saas, agency]`"
                )
                return None
            bad = [item for item in operand if not _is_scalar(item)]
            if bad:
                self.problem(
                    line,
                    f"{op} lists {bad[0]!r}, which is not a plain value",
                    "list plain values only, e.g. [saas, agency]",
                )
                return None
            return _Test(path, op, tuple(_plain(item) for item in operand))
        if op in _COMPARISONS:
            number = _number(operand)
            if number is None:
                self.problem(
                    line,
                    f"{op} needs a number, got {operand!r}",
                    f"write a plain number without units or currency, e.g. `{op}: 500`",
                )
                return None
            return _Test(path, op, int(number) if number.is_integer() else number)
        if op == "exists":
            if not isinstance(operand, bool):
                self.problem(
                    line,
                    f"exists needs true or false, got {operand!r}",
                    "write `exists: true` or `exists: false`",
                )
                return None
            return _Test(path, op, operand)
        if not _is_scalar(operand):  # contains, equals
            self.problem(
                line,
                f"{op} needs one plain value, got {_kind(operand)}",
                f"write e.g. `{op}: saas`"
                + ("; for several values use in" if op == "equals" else ""),
            )
            return None
        return _Test(path, op, _plain(operand))


# Words and symbols people reach for, mapped to the operator that does it.
_OPERATOR_WORDS = {
    "<": "lt", "less": "lt", "less_than": "lt", "below": "lt", "under": "lt",
    "<=": "lte", "max": "lte", "at_most": "lte",
    ">": "gt", "more": "gt", "more_than": "gt", "greater_than": "gt", "above": "gt", "over": "gt",
    ">=": "gte", "min": "gte", "at_least": "gte",
    "=": "equals", "==": "equals", "eq": "equals", "is": "equals", "equal": "equals",
    "one_of": "in", "any_of": "in", "none_of": "not_in", "notin": "not_in",
    "include": "contains", "includes": "contains", "has": "contains",
    "exist": "exists", "present": "exists",
}  # fmt: skip
_NOT_EQUAL = ("!=", "<>", "ne", "not", "not_equal", "not_equals", "is_not", "isnt")


def _operator_hint(op: Any) -> str:
    """The "did you mean ...? " hint for an unknown operator, or an empty string."""
    word = re.sub(r"[\s-]+", "_", str(op).strip().lower())
    if word in _NOT_EQUAL:
        return 'for "is not" write `not_in: [value]`. '
    if word in _OPERATOR_WORDS:
        return did_you_mean(word, [_OPERATOR_WORDS[word]], cutoff=0, code=False)
    return did_you_mean(word, OPERATORS, cutoff=0.5, code=False)


def _kind(node: Any) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, list):
        return "a list"
    return f"the value {node!r}"


def compile_when(
    node: Any, file: str, line: int, lines: LineLookup | None = None
) -> tuple[Condition | None, list[Problem]]:
    """Compile a ``when`` mapping.

    Args:
        node: The mapping as read from YAML (a ruamel ``CommentedMap`` or a dict).
        file: File name for problems.
        line: Line of the ``when`` key, used where a finer line is unknown.
        lines: Finds lines of nested keys; defaults to ruamel's position data.

    Returns:
        The condition (None when ``node`` is None or on any problem) and the problems.
    """
    if node is None:
        return None, []
    compiler = _Compiler(file, lines or yaml_line)
    root = compiler.mapping(node, line)
    if root is None or compiler.problems:
        return None, compiler.problems
    return Condition(root, tuple(dict.fromkeys(_paths(root)))), []
