"""The layering the code promises (docs/architecture.md): no import cycle among the
worker's modules, no module outside ``worker/store/`` talking to Redis, and no function
longer than 80 lines without a reason written above it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "worker"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """Every worker module imported anywhere in the file (function bodies too: an import
    hidden in a function is still a cycle), except under ``if TYPE_CHECKING``."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        deps = _imports(ast.parse(path.read_text()), modules)
        # Importing a.b.c imports its packages a and a.b first: only edges between
        # modules count, not a module and its own parent packages.
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_worker_modules_import_no_cycle() -> None:
    graph = _graph()
    assert "worker.runtime" in graph["worker.worker_process"]  # the graph is real
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_domain_does_not_know_the_runtime() -> None:
    """The composition root imports the domain, never the other way round."""
    graph = _graph()
    for module in ("actors", "pipeline", "sending", "scheduler", "enrollment", "store"):
        assert "worker.runtime" not in graph[f"worker.{module}"], module


REDIS_USE = re.compile(
    r"\.redis\.(?!close\()\w+\(|\.keys\.\w+|\bKeys\(|\b(?:register_script|pipeline|hset|hget|hgetall|"
    r"zadd|zrem|zscore|zrange|zrangebyscore|xadd|llen|zcard|smembers|sadd)\("
)


def test_only_the_store_talks_to_redis() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("store/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if REDIS_USE.search(line):
                offenders.append(f"worker/{relative}:{number}: {line.strip()}")
    assert offenders == []


#: How long a function may be before it needs a reason written beside it.
LONGEST_FUNCTION = 80
#: The comment, on the lines right above a long function's ``def`` (or its decorators),
#: that says why it is long, e.g. ``# Longer than 80 lines: one flat table of options.``
LONG_REASON = re.compile(r"#\s*Longer than \d+ lines: \S")


def _long_functions(source: str, where: str) -> list[str]:
    """``where:line name (N lines)`` of each function in ``source`` longer than
    :data:`LONGEST_FUNCTION` without a :data:`LONG_REASON` comment above it."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= LONGEST_FUNCTION:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = []
        for line in reversed(lines[: first - 1]):
            if not line.strip().startswith("#"):
                break
            above.append(line)
        if not any(LONG_REASON.search(line) for line in above):
            found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_functions_are_found() -> None:
    """The check itself: a long function (or method) is reported, one with its reason
    is not, whatever its decorators."""
    body = "\n".join(f"        x{n} = {n}" for n in range(LONGEST_FUNCTION))
    source = (
        "class A:\n"
        f"    def long(self):\n{body}\n\n"
        "    # Longer than 80 lines: a probe.\n"
        f"    @staticmethod\n    def explained():\n{body}\n\n"
        f"    def short(self):\n{body[: body.rindex(chr(10))]}\n"
    )
    assert _long_functions(source, "probe.py") == ["probe.py:2 long (81 lines)"]


def test_no_function_is_longer_than_80_lines_without_a_reason() -> None:
    """Issue 10: a function longer than about 80 lines is split, or says why not in a
    ``# Longer than 80 lines: ...`` comment right above it."""
    offenders = [
        found
        for path in sorted(PACKAGE.rglob("*.py"))
        for found in _long_functions(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert offenders == []
