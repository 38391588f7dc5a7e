"""The layout's rules, read from the product files' source: no import circle (function-local imports
count), the core (`jobs/`) importing nothing of the processes around it, settings read in few places,
and small modules, functions and constructors (an __init__, a factory function or classmethod, a
dataclass's fields)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.helpers import REPO

PRODUCT = ("jobs", "workers", "web", "commands", "cli.py", "scheduler.py", "bench")
# (importer prefix, imported prefix): the arrows that must not exist.
NEVER = [("jobs/", "commands/"), ("jobs/", "cli.py"), ("jobs/", "web/"), ("jobs/", "workers/"),
         ("jobs/", "scheduler.py"), ("web/", "workers/")]
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_INIT_PARAMS, MAX_SETTINGS_READS = 400, 50, 8, 4
# Functions that make an object, counted as constructors (so are classmethods and dataclasses' fields).
FACTORY_PREFIXES = ("create_", "build", "make_", "from_", "new_")
# Larger than the rule allows when dataclass fields and factories began to count (issue 21), each with its
# size then: none may grow, and none may be added (split it instead). Shrink an entry when its owner does.
OVERSIZED = {
    "bench/sizes.py:Sizes": 23,  # the benchmark's sizes, one flat table per run
    "bench/observe_seed.py:FakeRun": 9,
    "jobs/named/definitions.py:TaskDefinition": 12,
    "jobs/named/schedules.py:make_schedule": 11,
    "jobs/named/schedules.py:Schedule": 10,
    "jobs/observe/snapshot.py:Snapshot": 11,
    "jobs/refresh/progress.py:Counters": 10,
}


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
        if node.name == "__init__" or _is_factory(node):
            params = _parameters(node)
            limit = OVERSIZED.get(f"{path}:{node.name}", MAX_INIT_PARAMS)
            assert params <= limit, f"{path}:{node.lineno} {node.name}: {params} parameters"
    for node in ast.walk(TREES[path]):
        if isinstance(node, ast.ClassDef) and _is_dataclass(node):
            count = sum(isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                        and not _is_classvar(s.annotation) for s in node.body)
            limit = OVERSIZED.get(f"{path}:{node.name}", MAX_INIT_PARAMS)
            assert count <= limit, f"{path}:{node.lineno} {node.name}: {count} dataclass fields"


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters a caller may pass (self and cls not counted)."""
    a = node.args
    params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    first = (a.posonlyargs + a.args)[:1]
    return params - (1 if first and first[0].arg in ("self", "cls") else 0)


def _is_factory(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function that makes an object: create_app, build_worker, Settings.from_env, make_schedule..."""
    return node.name.startswith(FACTORY_PREFIXES) or any(
        isinstance(d, ast.Name) and d.id == "classmethod" for d in node.decorator_list)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if (isinstance(target, ast.Name) and target.id == "dataclass") or (
                isinstance(target, ast.Attribute) and target.attr == "dataclass"):
            return True
    return False


def _is_classvar(annotation: ast.expr) -> bool:
    return "ClassVar" in ast.unparse(annotation)


def test_the_size_rules_count_fields_and_factories() -> None:
    """A dataclass's fields and a factory's parameters count as a constructor's: Settings' groups among them."""
    tree = ast.parse("@dataclass(frozen=True)\nclass C:\n" + "".join(f"    f{i}: int = 0\n" for i in range(9))
                     + "    k: ClassVar[int] = 0\n    @classmethod\n    def from_x(cls, a, b): ...\n")
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    [factory] = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    assert _is_dataclass(cls) and _is_factory(factory) and _parameters(factory) == 2
    assert sum(isinstance(s, ast.AnnAssign) and not _is_classvar(s.annotation) for s in cls.body) == 9
    config = {n.name for n in ast.walk(TREES["jobs/config.py"]) if isinstance(n, ast.ClassDef) and _is_dataclass(n)}
    assert {"Settings", "ServerSettings", "UpstreamSettings", "AlertSettings"} <= config
    for key in OVERSIZED:  # a stale entry would let its name grow back unnoticed
        path, _, name = key.partition(":")
        assert any(getattr(n, "name", None) == name for n in ast.walk(TREES[path])), key


def test_the_layout_rules_see_what_they_check() -> None:
    """The scan reads the packages it is meant to (a rule over no files could not fail)."""
    assert {"jobs/refresh/plan.py", "jobs/named/runs.py", "jobs/duties/retries.py", "cli.py"} <= set(FILES)
    assert "jobs/refresh/finish.py" in GRAPH["jobs/refresh/plan.py"]
    assert Path(REPO / "jobs/upstream/data").is_dir()
