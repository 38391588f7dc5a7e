"""`--json` prints exactly one JSON document on stdout (JSON lines for `data show`), nothing else there;
messages and progress go to stderr. Every command with a --json option is exercised here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
import pytest
import redis

import cli
from commands.aliases import ALIAS_MARK
from jobs import queues
from jobs.named import runs
from jobs.upstream.serve import start_background
from tests.support.helpers import RefusingDirectory, drain, run_cli, worker_process
from tests.support.named_helpers import named_env, registry

SCALE = 3000


@pytest.fixture
def jenv(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return {**named_env(env, monkeypatch), "REFRESHQ_SAMPLE_SCALE": str(SCALE)}


def json_commands(group: click.Group = cli.cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if (command.short_help or "").startswith(ALIAS_MARK):
            continue  # the same command under its old name (tests/integration/test_vocabulary.py)
        if isinstance(command, click.Group):
            yield from json_commands(command, (*prefix, name))
        elif any("--json" in param.opts for param in command.params):
            yield (*prefix, name)


class Outputs:
    """Runs commands with --json, checks each stdout is one document, remembers which commands ran."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.covered: set[tuple[str, ...]] = set()

    def one(self, *args: str, path: int = 1, code: int = 0) -> Any:
        result = run_cli(*args, "--json", env=self.env, timeout=120)
        assert result.returncode == code, (args, result.stderr)
        self.covered.add(args[:path])
        return json.loads(result.stdout)  # one document, nothing before or after it

    def lines(self, *args: str, path: int = 2) -> tuple[list[Any], str]:
        result = run_cli(*args, "--json", env=self.env)
        assert result.returncode == 0, (args, result.stderr)
        self.covered.add(args[:path])
        return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


@pytest.mark.slow
def test_every_json_output_is_one_parseable_document(conn: redis.Redis, jenv: dict[str, str]) -> None:
    out = Outputs(jenv)
    with worker_process(jenv):
        final = out.one("refresh", "province", "北京", "--wait", path=2)
    assert final["status"] == "SUCCEEDED" and final["task_id"].startswith("task_")
    queued = out.one("refresh", "full", path=2)  # no worker now: it stays queued
    assert list(queued) == ["task_id"]
    assert out.one("refresh", "province", "天津", path=2).keys() == {"task_id"}
    shown = out.one("refresh", "status", final["task_id"], path=2)
    assert shown["status"] == "SUCCEEDED" and shown["upstream"] == {"kind": "sample", "scale": SCALE}
    assert out.one("refresh", "status", final["task_id"], "--watch", path=2)["progress"] == 100  # the bars go to stderr
    assert out.one("refresh", "status", queued["task_id"], path=2)["status"] == "PENDING"
    listed = out.one("refresh", "list", path=2)
    assert listed["total"] == 3 and all(t["upstream"] == shown["upstream"] for t in listed["items"])

    records, err = out.lines("data", "show", "北京", "--limit", "2")
    assert len(records) == 2 and all("id" in r for r in records)
    assert "(more; use --limit 0 for all)" in err
    everything, _ = out.lines("data", "show", "北京", "--limit", "0")
    assert len(everything) == final["statistics"]["hospitals_found"]
    assert out.one("data", "stats", path=2)["110000"]["records"] == len(everything)

    assert {t["name"] for t in out.one("tasks", "list", path=2)} >= {"cleanup", "t-add"}
    job_id = runs.enqueue_task(conn, registry().get("t-add"), [2, 3], modules=registry().modules)
    drain(conn, [queues.NORMAL])
    assert runs.get_result(job_id, timeout=5, conn=conn) == 5
    assert out.one("tasks", "history", "t-add", path=2)["total"] == 1
    assert run_cli("schedule", "add", "t-add", "--interval", "60", "--args", "[1, 2]", env=jenv).returncode == 0
    assert [s["name"] for s in out.one("schedule", "list", path=2)] == ["t-add"]
    assert out.one("dead-letters", "list", path=2) == []
    assert out.one("metrics", "--window", "all")["tasks"]["succeeded"] == 1
    assert out.one("health", code=3)["status"] == "critical"  # no scheduler runs in this test
    assert "province" in {row["kind"] for row in out.one("performance")["kinds"]}
    assert out.one("alerts", "list", path=2)["alerts"] == []
    assert run_cli("tokens", "create", "--user", "ci", "--role", "read", env=jenv).returncode == 0
    assert [(t["user"], t["role"]) for t in out.one("tokens", "list", path=2)] == [("ci", "read")]
    assert out.one("workers", "list", path=2)["suspended"]["queues"] == []

    assert out.covered == set(json_commands()), "a command with --json is not tested here"


def test_a_failed_refresh_with_wait_still_prints_one_document(conn: redis.Redis, jenv: dict[str, str]) -> None:
    """Exit 1 for a task that did not succeed, and still only its final status on stdout."""
    with start_background(directory=RefusingDirectory(SCALE, {"310101"})) as refusing:
        http_env = {**jenv, "REFRESHQ_UPSTREAM_URL": refusing.url}
        with worker_process(http_env):
            result = run_cli("refresh", "province", "上海", "--wait", "--json", env=http_env, timeout=120)
    assert result.returncode == 1, result.stderr
    status = json.loads(result.stdout)
    assert status["status"] == "FAILED" and [r["code"] for r in status["failed_regions"]] == ["310101"]
    assert f"refreshq: refresh {status['task_id']}" in result.stderr


def test_an_error_leaves_stdout_empty(conn: redis.Redis, jenv: dict[str, str]) -> None:
    for args, code in ((("refresh", "province", "火星", "--wait"), 2), (("status", "task_20990101_000000_ffffff"), 2),
                       (("data", "show", "北京"), 2)):
        result = run_cli(*args, "--json", env=jenv)
        assert (result.returncode, result.stdout) == (code, ""), (args, result.stderr)
        assert "refreshq: error:" in result.stderr, args
