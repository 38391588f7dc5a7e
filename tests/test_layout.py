"""The layout's rules, read from the product files' source: no import circle (function-local imports
count), the core (`jobs/`) importing nothing of the processes around it, settings read in few places,
and small modules, functions and constructors."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

PRODUCT = ("jobs", "workers", "web", "commands", "cli.py", "scheduler.py", "bench")
# (importer prefix, imported prefix): the arrows that must not exist.
NEVER = [("jobs/", "commands/"), ("jobs/", "cli.py"), ("jobs/", "web/"), ("jobs/", "workers/"),
         ("jobs/", "scheduler.py"), ("web/", "workers/")]
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_INIT_PARAMS, MAX_SETTINGS_READS = 400, 50, 8, 4


def _files() -> list[str]:
    found: list[str] = []
    for top in PRODUCT:
        path = REPO / top
        if path.is_file():
            found.append(top)
            continue
        found += [str(p.relative_to(REPO)) for p in path.rglob("*.py")
                  if "__pycache__" not in p.parts and "data" not in p.parts and "results" not in p.parts]
    return sorted(found)


FILES = _files()
TREES = {f: ast.parse((REPO / f).read_text(encoding="utf-8")) for f in FILES}


def _module(path: str) -> str:
    name = path[:-3].replace("/", ".")
    return name.removesuffix(".__init__")


BY_MODULE = {_module(f): f for f in FILES}


def _resolve(dotted: str) -> str | None:
    """The product file a dotted name comes from: the longest module prefix that is one."""
    while dotted:
        if dotted in BY_MODULE:
            return BY_MODULE[dotted]
        dotted = dotted.rpartition(".")[0]
    return None


def _imports(path: str) -> set[str]:
    package = _module(path) if path.endswith("__init__.py") else _module(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(TREES[path]):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


GRAPH = {f: {t for t in map(_resolve, _imports(f)) if t and t != f} for f in FILES}


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([*component, node]))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def test_no_product_file_imports_one_that_imports_it_back() -> None:
    assert _circles() == []


def test_the_core_imports_nothing_of_the_processes_around_it() -> None:
    broken = [(f, t) for f, targets in GRAPH.items() for t in targets
              for source, target in NEVER if f.startswith(source) and t.startswith(target)]
    assert broken == []


def test_settings_are_read_from_the_environment_in_few_places() -> None:
    reads = [f"{f}:{n}" for f in FILES for n, line in enumerate((REPO / f).read_text().splitlines(), 1)
             if re.search(r"Settings\.from_env\(", line) and not line.lstrip().startswith("#")]
    assert len(reads) <= MAX_SETTINGS_READS, reads


@pytest.mark.parametrize("path", FILES)
def test_modules_functions_and_constructors_are_small(path: str) -> None:
    lines = (REPO / path).read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path}: {lines} lines"
    for node in ast.walk(TREES[path]):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        assert length <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {length} lines"
        if node.name == "__init__":
            a = node.args
            params = len(a.posonlyargs) + len(a.args) - 1 + len(a.kwonlyargs) + (a.vararg is not None)
            params += a.kwarg is not None
            assert params <= MAX_INIT_PARAMS, f"{path}:{node.lineno} __init__: {params} parameters"


def test_the_layout_rules_see_what_they_check() -> None:
    """The scan reads the packages it is meant to (a rule over no files could not fail)."""
    assert {"jobs/refresh/plan.py", "jobs/named/runs.py", "jobs/duties/retries.py", "cli.py"} <= set(FILES)
    assert "jobs/refresh/finish.py" in GRAPH["jobs/refresh/plan.py"]
    assert Path(REPO / "jobs/upstream/data").is_dir()
