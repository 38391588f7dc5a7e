"""The tests' own layout: every test file in one of three groups by what it needs -- unit (no server),
integration (the session's server), processes (workers, scheduler, web, browser) -- with what they share
in tests/support, so `pytest tests/unit` runs without a server and a lighter group leans on no heavier one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.helpers import REPO

TESTS = REPO / "tests"
GROUPS = ("unit", "integration", "processes")  # lightest first
# Helpers that start a long-running process (or drive a browser): only the processes group uses them.
PROCESS_STARTERS = {"worker_process", "scheduler_running", "refreshq_process", "spawn_refreshq", "web_process",
                    "pool_process", "refreshq_web", "browser", "webdriver"}
# What starts a server of its own, outside the session's.
SERVER_STARTERS = {"EmbeddedServer", "PrivateValkey", "ensure_running"}


def _fixtures(tree: ast.Module) -> dict[str, set[str]]:
    """Each fixture function of a module by name, with the names of its parameters."""
    return {node.name: {a.arg for a in node.args.args} for node in tree.body
            if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list)}


def _server_fixtures() -> set[str]:
    """The root conftest's fixtures that reach the session's server (`valkey`), directly or through others."""
    fixtures = _fixtures(ast.parse((TESTS / "conftest.py").read_text()))
    found = {"valkey"}
    while more := {name for name, params in fixtures.items() if params & found} - found:
        found |= more
    return found


def _requested(tree: ast.Module) -> set[str]:
    """The fixtures a module asks for: its functions' parameters and its usefixtures marks' names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names |= {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("usefixtures"):
            names |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return names


def _referenced(tree: ast.Module) -> set[str]:
    """Every name, attribute and imported name a module uses."""
    names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


def _imported_modules(tree: ast.Module) -> set[str]:
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return modules | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}


def _group_files(group: str) -> list[Path]:
    return sorted((TESTS / group).glob("test_*.py"))


def test_every_test_file_sits_in_one_of_the_three_groups() -> None:
    stray = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py")
             if p.parent.parent != TESTS or p.parent.name not in GROUPS]
    assert stray == []
    top = {p.name for p in TESTS.iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", "conftest.py", "support", *GROUPS}
    for group in (*GROUPS, "support"):
        assert (TESTS / group / "__init__.py").is_file(), group  # module names stay unique across groups
        assert group == "support" or _group_files(group), group


def test_unit_tests_use_no_server_and_start_no_process() -> None:
    server = _server_fixtures()
    assert {"conn", "redis_url", "env", "settings", "tenv"} <= server  # the conftest reading still works
    found = set()
    for path in _group_files("unit"):
        tree = ast.parse(path.read_text())
        used = (_requested(tree) & server) | (_referenced(tree) & (SERVER_STARTERS | PROCESS_STARTERS))
        if used:
            found.add(f"{path.name}: {sorted(used)}")
    assert found == set()


def test_integration_tests_start_no_long_running_process() -> None:
    found = {f"{p.name}: {sorted(used)}" for p in _group_files("integration")
             if (used := _referenced(ast.parse(p.read_text())) & PROCESS_STARTERS)}
    assert found == set()


def test_a_group_imports_test_modules_of_its_own_group_or_lighter_ones_only() -> None:
    heavier = {group: {f"tests.{g}" for g in GROUPS[i + 1:]} for i, group in enumerate(GROUPS)}
    found = [f"{group}/{p.name} imports {module}" for group in GROUPS for p in _group_files(group)
             for module in _imported_modules(ast.parse(p.read_text()))
             if module.rpartition(".")[0] in heavier[group]]
    support = [f"support/{p.name} imports {module}" for p in sorted((TESTS / "support").glob("*.py"))
               for module in _imported_modules(ast.parse(p.read_text()))
               if module.startswith(tuple(f"tests.{g}" for g in GROUPS))]
    assert found + support == []
