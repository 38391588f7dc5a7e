"""Settings are read once, where a process or a library call starts, and passed down: no module below
those entry points reads the environment (os.environ, os.getenv), builds Settings from it
(Settings.from_env) or asks for the process's settings (jobs.context.process_settings)."""

from __future__ import annotations

import ast

from tests.support.helpers import REPO
from tests.unit.test_layout import FILES, TREES

# Where reading the environment is allowed: a whole file, or one function of it (by qualified name), and why.
ENTRY_POINTS = {
    "jobs/config.py": "the settings themselves: Settings.from_env and the default data directory",
    "cli.py:cli": "the CLI: read once when a command starts, passed to every command (commands.runtime)",
    "scheduler.py:default_duties": "the scheduler process's entry point, when not given settings",
    "workers/base.py:build": "the worker builder: read once, before the worker forks any work-horse",
    "jobs/context.py:process_settings": "the library's one read, called only by the entry points below",
    "jobs/context.py:current": "a job run by a worker not refreshq's: the job function is where refreshq starts",
    "jobs/refresh/manager.py:SyncRefreshManager.__init__": "library entry point: RefreshManager() without settings",
    "jobs/named/task.py:TaskHandle.enqueue": "library entry point: some_task.delay() without a connection",
    "jobs/named/workflows.py:Chain.delay": "library entry point: chain(...).delay() without a connection",
    "jobs/named/workflows.py:Batch.delay": "library entry point: batch(...).delay() without a connection",
    "jobs/named/runs.py:get_result": "library entry point: get_result(run_id) without a connection",
    # Process-level values that are no setting of refreshq's:
    "jobs/refresh/plan.py:job_holder": "RQ_WORKER_ID, which RQ itself sets in a work-horse's environment",
    "jobs/upstream/serve.py:main": "the reference upstream's own process: its token, kept off the command line",
    "commands/demo.py:_start_workers": "the demo's workers inherit this environment, minus the upstream's",
}
READERS = {"process_settings", "getenv", "environ", "from_env"}


def _reads(tree: ast.Module) -> list[tuple[str, int, str]]:
    """(qualified name of the enclosing function or "", line, what) of every environment read in a module."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = [*scope, child.name]
            what = _read_of(child)
            if what:
                found.append((".".join(s for s in scope), child.lineno, what))
            visit(child, inner)

    visit(tree, [])
    return found


def _read_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "os" and node.attr in ("environ", "getenv", "putenv"):
            return f"os.{node.attr}"
        if node.value.id == "Settings" and node.attr == "from_env":
            return "Settings.from_env"
    if isinstance(node, ast.Attribute) and node.attr == "process_settings":
        return "process_settings"
    if isinstance(node, ast.Name) and node.id == "process_settings" and isinstance(node.ctx, ast.Load):
        return "process_settings"
    if isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in READERS for a in node.names):
        return "from os import environ/getenv"
    return None


def _within(where: str, key: str) -> bool:
    """`where` ("file:Class.function") is the entry point `key` or a function nested in it."""
    return where == key or where.startswith(f"{key}.")


def _allowed(path: str, scope: str) -> bool:
    return path in ENTRY_POINTS or any(_within(f"{path}:{scope}", key) for key in ENTRY_POINTS)


def test_only_the_entry_points_read_the_environment() -> None:
    product = [f for f in FILES if not f.startswith("bench/")]  # the bench drives processes, as a user
    found = [f"{f}:{scope or '<module>'}:{line} {what}" for f in product for scope, line, what in _reads(TREES[f])
             if not _allowed(f, scope)]
    assert found == []


def test_every_entry_point_listed_still_reads_the_environment() -> None:
    """A stale entry (the read moved or went) would let a new read in unnoticed."""
    used = {f"{f}:{scope}" for f in FILES for scope, _line, _what in _reads(TREES[f])}
    for key in ENTRY_POINTS:
        path = key.partition(":")[0]
        assert (REPO / path).is_file(), key
        assert ":" not in key or any(_within(u, key) for u in used), f"{key}: no environment read there any more"


def test_the_scan_sees_a_read_below_an_entry_point() -> None:
    tree = ast.parse("import os\ndef f():\n    return os.environ.get('X'), process_settings()\n")
    assert [(scope, what) for scope, _line, what in _reads(tree)] == [("f", "os.environ"), ("f", "process_settings")]
    assert not _allowed("jobs/duties/retries.py", "f")
