"""The glossary, applied (issue 21): *refresh*, *task* -> *run* -> *attempt*, *job*, *dead letter*.

The glossary's names, verbs and paths work; the old ones are aliases of the same objects, marked as aliases
in --help and in the docstrings; one RetryPolicy serves refresh jobs, named tasks and upstream requests; and
no module, class, function, CLI verb or API path says "task" for a refresh (outside the documented aliases and
the Redis key builders: key names stay, a rename would need a data migration).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner

import jobs
from jobs.config import Settings
from jobs.errors import RefreshNotFoundError, TaskExecutionError, TaskNotFoundError
from jobs.named import history
from jobs.refresh import manager as managers
from jobs.retry_policy import RetryPolicy
from tests.support import named_task_functions as f
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.helpers import REPO, run_cli
from tests.support.named_helpers import drain_all

REFRESH_VERBS = ("list", "status", "cancel", "resume", "cleanup")
ALIAS = re.compile(r"^Alias of `refreshq ([a-z -]+)`\.$")


def _cli() -> click.Group:
    from cli import cli

    return cli


def _help(*args: str) -> str:
    result = CliRunner().invoke(_cli(), [*args, "--help"], terminal_width=200, max_content_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _listed(help_text: str) -> dict[str, str]:
    """The commands a --help lists, with their short help."""
    section = help_text.split("Commands:\n", 1)[1]
    return dict(re.findall(r"^  (\S+)\s+(.*?)\s*$", section, flags=re.M))


def test_the_refresh_managers_and_error_have_the_glossary_names_and_the_old_ones_are_aliases() -> None:
    assert jobs.RefreshManager is managers.RefreshManager is jobs.TaskManager is managers.TaskManager
    assert jobs.SyncRefreshManager is managers.SyncRefreshManager is jobs.SyncTaskManager
    assert jobs.RefreshNotFoundError is RefreshNotFoundError is TaskNotFoundError
    assert {"RefreshManager", "SyncRefreshManager", "RefreshNotFoundError"} <= set(jobs.__all__)
    assert managers.RefreshManager.__name__ == "RefreshManager"
    for doc in (jobs.__doc__ or "", managers.__doc__ or ""):
        assert "alias" in doc and "TaskManager" in doc


def test_refresh_verbs_are_the_refresh_group_and_the_old_top_level_verbs_are_marked_aliases() -> None:
    top, group = _listed(_help()), _listed(_help("refresh"))
    assert set(group) == {"full", "province", *REFRESH_VERBS}
    for verb in REFRESH_VERBS:
        assert top[verb] == f"Alias of `refreshq refresh {verb}`."
        assert not group[verb].startswith("Alias")
        own, aliased = _help("refresh", verb), _help(verb)
        assert f"Alias of `refreshq refresh {verb}`." in aliased and "Alias" not in own
        assert aliased.split("Options:")[1] == own.split("Options:")[1]  # the same options
        assert [p.name for p in _cli().commands[verb].params] == [
            p.name for p in _cli().commands["refresh"].commands[verb].params  # type: ignore[attr-defined]
        ]
    assert top["failed"] == "Alias of `refreshq dead-letters`." and not top["dead-letters"].startswith("Alias")
    assert _listed(_help("failed")) == _listed(_help("dead-letters"))
    # Every alias says what it is an alias of, and that is a command that exists and is no alias itself.
    for name, short in top.items():
        alias_of = ALIAS.match(short)
        if alias_of:
            target = _listed(_help(*alias_of.group(1).split()[:-1])) if " " in alias_of.group(1) else top
            assert not ALIAS.match(target[alias_of.group(1).split()[-1]]), name


def test_the_new_verbs_and_their_aliases_answer_alike(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    manager = jobs.SyncRefreshManager(settings, conn, upstream={"kind": "sample", "scale": 300})
    refresh_id = manager.create_full_refresh_task()
    with pytest.raises(RefreshNotFoundError):
        manager.get_task_status("no-such-refresh")

    def ok(*args: str) -> Any:
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    new, old = ok("refresh", "list", "--json"), ok("list", "--json")
    assert [i["task_id"] for i in new["items"]] == [i["task_id"] for i in old["items"]] == [refresh_id]
    assert ok("refresh", "status", refresh_id, "--json")["status"] == ok("status", refresh_id, "--json")["status"]
    assert ok("dead-letters", "list", "--json") == ok("failed", "list", "--json") == []
    missing = [run_cli(*verb, "no-such-refresh", env=env) for verb in (("refresh", "status"), ("status",))]
    assert missing[0].returncode == missing[1].returncode != 0
    assert "no refresh task no-such-refresh" in missing[0].stderr


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def test_dead_letters_is_the_api_path_and_failed_an_alias_of_the_same_views(api: Api) -> None:
    from web.api.blueprint import ALIASES

    endpoints = {
        (method, rule.rule): rule.endpoint
        for rule in api.app.url_map.iter_rules() for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert ALIASES == {
        ("GET", "/api/v1/failed"): "/api/v1/dead-letters", ("DELETE", "/api/v1/failed"): "/api/v1/dead-letters",
        ("GET", "/api/v1/failed/<job_id>"): "/api/v1/dead-letters/<job_id>",
        ("POST", "/api/v1/failed/<job_id>/retry"): "/api/v1/dead-letters/<job_id>/retry",
    }
    for (method, path), target in ALIASES.items():
        assert api.app.view_functions[endpoints[(method, path)]] is api.app.view_functions[endpoints[(method, target)]]
    assert api.get("/dead-letters").get_json() == api.get("/failed").get_json()
    assert api.get("/dead-letters").get_json()["total"] == 0
    is_problem(api.get("/dead-letters/nope"), 404)
    is_problem(api.post("/dead-letters/nope/retry", "operate"), 403)
    read = {"Authorization": f"Bearer {api.tokens['read']}"}
    page = api.client.get("/dead-letters", headers=read)
    assert page.status_code == 200 and "Dead letters" in page.text and "Failed jobs" not in page.text
    assert api.client.get("/failed", headers=read).text == page.text


def test_one_retry_policy_for_refresh_jobs_named_tasks_and_upstream_requests(settings: Settings) -> None:
    from jobs.duties import retries
    from jobs.upstream.retry import Backoff

    assert retries.RetryPolicy is RetryPolicy and isinstance(retries.policy_of(settings), RetryPolicy)
    assert isinstance(f.flaky.retry, RetryPolicy) and f.flaky.retry.intervals() == [0, 0]
    assert isinstance(Backoff().policy(), RetryPolicy)
    picky = f.picky.retry
    assert picky.allows(1, ValueError()) and picky.allows(2, ValueError()) and not picky.allows(3, ValueError())
    assert not picky.allows(1, KeyError())
    defined = [
        path.relative_to(REPO).as_posix() for path in _sources()
        for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef) and "Retr" in node.name
        and "Policy" in node.name
    ]
    assert defined == ["jobs/retry_policy.py"]


def test_a_named_task_retries_only_what_its_retry_when_allows(conn: redis.Redis, tenv: dict[str, str]) -> None:
    final, retried = f.picky.delay("key"), f.picky.delay("value")
    drain_all(conn)  # retry_delay=0: RQ requeues at once and the same burst runs the retries
    for run_id in (final, retried):
        with pytest.raises(TaskExecutionError):
            f.picky.get_result(run_id, timeout=5)
    _total, entries = history.page(conn, "t-picky")
    attempts = {run: sorted((e["attempt"], e["retrying"]) for e in entries if e["job_id"] == run)
                for run in (final, retried)}
    assert attempts == {final: [(1, False)], retried: [(1, True), (2, True), (3, False)]}


# -- "task" only for a named task ---------------------------------------------------------------------------

PACKAGES = ("jobs", "commands", "web", "workers")
# Where a name with "task" in it means a named task (or the files are other engineers' or the key schema's):
NAMED_TASK_FILES = {"jobs/named", "jobs/duties/named_retries.py", "jobs/duties/lost_runs.py", "commands/tasks.py",
                    "commands/schedule.py", "web/api/tasks.py", "web/api/schedules.py", "web/pages/views.py",
                    "jobs/observe/outcomes.py"}
# jobs/keys.py: the Redis key builders keep the key names' word (refreshq:task:<id>; see GLOSSARY);
# jobs/errors.py: the error tree is regrouped apart (TaskError covers refreshes and runs until then).
NOT_CHECKED = {"jobs/keys.py", "jobs/errors.py"}
# Documented aliases and the reference design's method names, kept (jobs/refresh/manager.py says so).
ALLOWED = {
    "TaskManager", "SyncTaskManager", "TaskNotFoundError",
    "create_full_refresh_task", "create_province_refresh_task", "get_task_status", "cancel_task", "resume_task",
    "list_tasks", "get_active_tasks", "cleanup_old_tasks",
    "_ProblemTask",  # waitress's word: its ErrorTask (web/wsgi.py)
}


def _sources() -> list[Path]:
    found = [REPO / "cli.py", REPO / "scheduler.py"]
    for package in PACKAGES:
        found += sorted((REPO / package).rglob("*.py"))
    return found


def _about_named_tasks(relative: str) -> bool:
    return any(relative == place or relative.startswith(place + "/") for place in NAMED_TASK_FILES)


def _names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        if isinstance(node, ast.ClassDef):
            names += [n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name) and re.fullmatch(r"[A-Z][a-z]\w*", t.id)]
    return names


def test_no_module_class_or_function_outside_named_tasks_says_task() -> None:
    found = []
    for path in _sources():
        relative = path.relative_to(REPO).as_posix()
        if relative in NOT_CHECKED or _about_named_tasks(relative):
            continue
        if "task" in path.stem:
            found.append(relative)
        found += [f"{relative}: {name}" for name in _names(ast.parse(path.read_text()))
                  if "task" in name.lower() and name not in ALLOWED]
    assert found == []


def test_no_cli_verb_or_api_path_says_task_for_a_refresh(api: Api) -> None:
    def verbs(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        found = []
        for name, command in group.commands.items():
            found.append((*path, name))
            if isinstance(command, click.Group):
                found += verbs(command, (*path, name))
        return found

    saying_task = [" ".join(v) for v in verbs(_cli()) if any("task" in word for word in v)]
    assert saying_task == ["tasks", "tasks list", "tasks run", "tasks history"]  # the named tasks' group
    # The paths' words; a variable (`<task_id>`) is named after the JSON field it matches, the reference
    # design's id of a refresh, which stays.
    paths = {rule.rule for rule in api.app.url_map.iter_rules() if "task" in re.sub(r"<[^>]*>", "", rule.rule)}
    assert paths == {"/api/v1/tasks", "/api/v1/tasks/<name>", "/api/v1/tasks/<name>/run",
                     "/api/v1/tasks/<name>/history", "/tasks", "/tasks/<name>"}
