"""The house plan, checked: no import cycle in src/, small files, short functions.

A file over `MAX_FILE_LINES` or a function over `MAX_FUNCTION_LINES` must say why at its
top, in a comment starting `# size:` (for a file: within its first 15 lines; for a
function: on the line after its signature or as the first line of its body).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "helios"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
REASON = "# size:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the helios modules it imports (anywhere in the file, TYPE_CHECKING too)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node, is_package)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                # the longest prefix that is a module of ours: `from a.b import c` names a.b.c
                # when c is a submodule, else a.b
                parts = target.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                dep = ".".join(parts)
                if dep and dep != name and dep.startswith(PACKAGE):
                    graph[name].add(dep)
        graph.setdefault(name, set())
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first repeated last), or None.

    A package's `__init__` re-exporting its own submodules is not a cycle: a submodule's
    import of a sibling does not run through the package face.
    """
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_in_src() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def _has_reason(lines: list[str], start: int, stop: int) -> bool:
    return any(REASON in line for line in lines[start:stop])


def test_files_are_small_or_say_why() -> None:
    long = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_FILE_LINES and not _has_reason(lines, 0, 15):
            long.append(f"{path.relative_to(SRC)}: {len(lines)} lines")
    assert not long, f"files over {MAX_FILE_LINES} lines without a '{REASON}' reason: {long}"


def test_functions_are_short_or_say_why() -> None:
    long = []
    for path in _modules().values():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            size = (node.end_lineno or node.lineno) - first + 1
            body = node.body[0].lineno
            if size > MAX_FUNCTION_LINES and not _has_reason(lines, node.lineno - 1, body + 1):
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a reason: {long}"
