"""The `refreshq tasks` and `refreshq schedule` commands as a user runs them, including every bad input."""

from __future__ import annotations

import json
import sys

import pytest
import redis

import cli
from jobs import queues
from tests.support.helpers import run_cli, stored_keys, worker_process


def _ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tasks_list_and_run(conn: redis.Redis, tenv: dict[str, str]) -> None:
    listed = _ok("tasks", "list", env=tenv)
    assert "cleanup" in listed and "data-snapshot" in listed and "refresh-full" in listed and "t-add" in listed
    assert [t["name"] for t in json.loads(_ok("tasks", "list", "--category", "math", "--json", env=tenv))] == ["t-add"]
    assert {t["name"] for t in json.loads(_ok("tasks", "list", "--tag", "fast", "--json", env=tenv))} == {
        "t-add", "t-fail"}
    with worker_process(tenv, "--queue", "normal"):
        out = _ok("tasks", "run", "t-add", "--args", "[2, 3]", "--wait", "--timeout", "30", env=tenv)
        assert out.splitlines()[1] == "5"
        out = _ok("tasks", "run", "t-add", "--args", '{"a": 1, "b": 1}', "--wait", env=tenv)
        assert out.splitlines()[1] == "2"
        failed = run_cli("tasks", "run", "t-fail", "--wait", "--timeout", "30", env=tenv)
        assert failed.returncode == 1 and "ValueError: boom" in failed.stderr
    assert "t-add: 2 attempts" in _ok("tasks", "history", "t-add", env=tenv)


@pytest.mark.slow
def test_schedule_commands(conn: redis.Redis, tenv: dict[str, str]) -> None:
    assert "scheduled t-add: every 10 s" in _ok("schedule", "add", "t-add", "--interval", "10", "--args", "[1, 2]",
                                               env=tenv)
    out = _ok("schedule", "add", "t-step", "--cron", "0 9 * * 1-5", "--timezone", "UTC", "--args", '["x"]', env=tenv)
    assert "cron '0 9 * * 1-5' UTC" in out
    rows = {r["name"]: r for r in json.loads(_ok("schedule", "list", "--json", env=tenv))}
    assert rows["t-add"]["interval"] == 10 and rows["t-add"]["args"] == [1, 2] and not rows["t-add"]["paused"]
    assert rows["t-step"]["next_run"].endswith("09:00:00+00:00")
    assert "paused t-add" in _ok("schedule", "pause", "t-add", env=tenv)
    assert json.loads(_ok("schedule", "list", "--json", env=tenv))[0]["paused"] is True
    table = _ok("schedule", "list", env=tenv)
    assert "every 10 s" in table and "yes" in table
    assert "resumed t-add" in _ok("schedule", "resume", "t-add", env=tenv)
    job_id = _ok("schedule", "run-now", "t-add", env=tenv).strip()
    assert queues.queue(conn, queues.NORMAL).job_ids == [job_id]
    again = run_cli("schedule", "run-now", "t-add", env=tenv)  # the first run is still queued
    assert again.returncode == 1 and "still queued or running" in again.stderr
    assert "removed schedule t-add" in _ok("schedule", "remove", "t-add", env=tenv)
    assert [r["name"] for r in json.loads(_ok("schedule", "list", "--json", env=tenv))] == ["t-step"]
    out = _ok("schedule", "add", "cleanup", env=tenv)  # no trigger given: the task's default schedule
    assert "cron '30 3 * * *' Asia/Shanghai" in out


BAD_INPUTS = [
    (["schedule", "add", "t-add", "--cron", "61 * * * *", "--args", "[1, 2]"], "cron expression '61 * * * *'"),
    (["schedule", "add", "t-add", "--cron", "* * *", "--args", "[1, 2]"], "expected 5 fields"),
    (["schedule", "add", "t-add", "--cron", "0 0 31 2 *", "--args", "[1, 2]"], "never fires"),
    (["schedule", "add", "nope", "--interval", "10"], "unknown task 'nope'"),
    (["schedule", "add", "t-add", "--interval", "10", "--args", "[1, 2"], "not valid JSON"),
    (["schedule", "add", "t-add", "--interval", "10", "--args", '"x"'], "expected a JSON array"),
    (["schedule", "add", "t-add", "--interval", "10", "--args", "[1]"], "do not fit task t-add"),
    (["schedule", "add", "t-add", "--cron", "0 3 * * *", "--timezone", "Mars/Olympus", "--args", "[1, 2]"],
     "unknown timezone 'Mars/Olympus'"),
    (["schedule", "add", "t-add", "--interval", "0", "--args", "[1, 2]"], "interval 0 is not valid"),
    (["schedule", "add", "t-add", "--interval", "5", "--cron", "* * * * *", "--args", "[1, 2]"], "exactly one"),
    (["schedule", "add", "t-add", "--interval", "5", "--max-instances", "0", "--args", "[1, 2]"], "max instances"),
    (["schedule", "add", "t-add", "--interval", "5", "--misfire-grace-time", "0", "--args", "[1, 2]"], "grace"),
    (["schedule", "add", "t-add"], "has no default schedule"),
    (["schedule", "pause", "nope"], "no schedule 'nope'"),
    (["schedule", "resume", "nope"], "no schedule 'nope'"),
    (["schedule", "remove", "nope"], "no schedule 'nope'"),
    (["schedule", "run-now", "nope"], "no schedule 'nope'"),
    (["tasks", "run", "nope"], "unknown task 'nope'"),
    (["tasks", "run", "t-add", "--args", "{bad"], "not valid JSON"),
    (["tasks", "run", "t-add", "--args", '{"a": 1, "c": 2}'], "do not fit task t-add"),
    (["tasks", "history", "nope"], "unknown task 'nope'"),
]


def test_every_bad_input_exits_2_and_stores_nothing(
    conn: redis.Redis, tenv: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the CLI's entry point in this process (the same exit-code mapping, without a process each)."""
    before = stored_keys(conn)
    for args, message in BAD_INPUTS:
        monkeypatch.setattr(sys, "argv", ["refreshq", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        err = capsys.readouterr().err
        assert (exit_info.value.code, message in err) == (2, True), (args, err)
        assert stored_keys(conn) == before, args  # nothing stored, nothing enqueued


@pytest.mark.parametrize(("args", "message"), [BAD_INPUTS[i] for i in (0, 3, 4, 7)],
                         ids=["bad cron", "unknown task", "non-JSON args", "unknown timezone"])
def test_bad_input_as_a_user_runs_it(
    conn: redis.Redis, tenv: dict[str, str], args: list[str], message: str
) -> None:
    before = stored_keys(conn)
    result = run_cli(*args, env=tenv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "refreshq: error: " in result.stderr and message in result.stderr
    assert stored_keys(conn) == before
