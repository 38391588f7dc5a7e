"""Bad input to any command, as a user types it: a message naming the cause, exit code 2, nothing stored.

Numbers out of range (huge intervals, non-finite floats), task modules that do not import (checked when
a worker or the scheduler starts), bad environment values, bad options of every command.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from jobs import keys, queues
from jobs.named import runs
from tests.support.helpers import run_cli, stored_keys
from tests.support.named_helpers import registry

HUGE = "99999999999999999999"


def _refused(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, env=env)
    assert "Traceback" not in result.stderr, (args, result.stderr)
    assert result.returncode == 2, (args, result.returncode, result.stderr)
    assert message in result.stderr, (args, result.stderr)
    assert result.stdout == "", (args, result.stdout)


OPTION_CASES = [
    (("schedule", "add", "cleanup", "--interval", HUGE), f"interval {HUGE} is not valid"),
    (("schedule", "add", "cleanup", "--interval", "31622401"), "from 1 to 31622400 (366 days)"),
    (("schedule", "add", "cleanup", "--interval", "-5"), "interval -5 is not valid"),
    (("schedule", "add", "cleanup", "--interval", "60", "--max-instances", HUGE), f"max instances {HUGE}"),
    (("schedule", "add", "cleanup", "--interval", "60", "--misfire-grace-time", HUGE), f"misfire grace time {HUGE}"),
    (("schedule", "add", "cleanup", "--interval", "60", "--misfire-grace-time", "-1"), "misfire grace time -1"),
    (("schedule", "add", "cleanup", "--cron", "0 3 * * *", "--timezone", "Asia/" + "x" * 300), "unknown timezone"),
    (("schedule", "add", "cleanup", "--cron", "0 3 * * *", "--timezone", "Asia"), "unknown timezone 'Asia'"),
    (("schedule", "add", "cleanup", "--cron", "0 0 1-99999999999999 * *"), "cron expression"),
    (("schedule", "add", "cleanup", "--cron", "@reboot"), "expected 5 fields"),
    (("tasks", "run", "cleanup", "--timeout", "nan"), "'nan' is not a finite number"),
    (("tasks", "run", "cleanup", "--timeout", "inf"), "--timeout"),
    (("tasks", "run", "cleanup", "--timeout", "-1"), "--timeout"),
    (("tasks", "history", "cleanup", "--limit", HUGE), "--limit"),
    (("tasks", "history", "cleanup", "--offset", "-1"), "--offset"),
    (("list", "--page", "0"), "--page"),
    (("list", "--page", "-3"), "--page"),
    (("list", "--page-size", HUGE), "--page-size"),
    (("cleanup", "--older-than", "1e9999d"), "--older-than '1e9999d' is not valid"),
    (("cleanup", "--older-than", "-1d"), "--older-than '-1d' is not valid"),
    (("cleanup", "--older-than", "9" * 400 + "d"), "out of range"),
    (("data", "show", "北京", "--limit", "-1"), "--limit"),
    (("demo", "--scale", HUGE), "--scale"),
    (("demo", "--workers", "0"), "--workers"),
    (("upstream", "serve", "--latency-ms", "nan"), "--latency-ms"),
    (("upstream", "serve", "--latency-ms", "inf"), "--latency-ms"),
    (("upstream", "serve", "--fail-rate", "nan"), "--fail-rate"),
    (("upstream", "serve", "--hang-rate", "2"), "--hang-rate"),
    (("upstream", "serve", "--scale", HUGE), "--scale"),
    (("upstream", "serve", "--port", "70000"), "--port"),
    (("upstream", "serve", "--id-format", "uuid"), "--id-format"),
]


@pytest.mark.parametrize(("args", "message"), OPTION_CASES, ids=[" ".join(a)[:60] for a, _ in OPTION_CASES])
def test_an_out_of_range_option_exits_2_and_stores_nothing(
    conn: redis.Redis, tenv: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    before = stored_keys(conn)
    _refused(args, tenv, message)
    assert stored_keys(conn) == before


def test_a_huge_interval_leaves_an_existing_schedule_as_it_was(conn: redis.Redis, tenv: dict[str, str]) -> None:
    assert run_cli("schedule", "add", "cleanup", "--interval", "600", env=tenv).returncode == 0
    before = {k: conn.dump(k) for k in stored_keys(conn)}
    _refused(("schedule", "add", "cleanup", "--interval", HUGE), tenv, "interval")
    assert {k: conn.dump(k) for k in stored_keys(conn)} == before
    listed = run_cli("schedule", "list", "--json", env=tenv)
    assert '"interval": 600' in listed.stdout


def test_a_huge_offset_or_page_is_an_empty_page_not_an_error(conn: redis.Redis, tenv: dict[str, str]) -> None:
    history = run_cli("tasks", "history", "cleanup", "--offset", HUGE, "--json", env=tenv)
    assert history.returncode == 0, history.stderr
    assert '"items": []' in history.stdout


@pytest.mark.parametrize("name", ["REFRESHQ_UPSTREAM_RPS", "REFRESHQ_UPSTREAM_TIMEOUT", "REFRESHQ_RETRY_CAP"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_setting_stops_every_command(
    conn: redis.Redis, env: dict[str, str], name: str, value: str
) -> None:
    before = stored_keys(conn)
    for args in (("list",), ("refresh", "full")):
        _refused(args, {**env, name: value}, f"{name}={value!r} is not valid: expected a number from")
    assert stored_keys(conn) == before
    assert queues.queue(conn, queues.REFRESH).count == 0


@pytest.mark.parametrize(("name", "value"), [
    ("REFRESHQ_TASK_TIMEOUT", HUGE), ("REFRESHQ_MAX_PENDING", HUGE), ("REFRESHQ_SAMPLE_SCALE", HUGE),
    ("REFRESHQ_UPSTREAM_CONCURRENCY", "-1"), ("REFRESHQ_UPSTREAM_ATTEMPTS", HUGE),
])
def test_an_out_of_range_whole_number_setting_stops_the_command(
    conn: redis.Redis, env: dict[str, str], name: str, value: str
) -> None:
    before = stored_keys(conn)
    _refused(("refresh", "full"), {**env, name: value}, f"{name}={value!r} is not valid: expected a whole number")
    assert stored_keys(conn) == before


def _bad_module_dir(tmp_path: Path) -> Path:
    (tmp_path / "boom_tasks.py").write_text('raise RuntimeError("needs BOOM_CONFIG")\n')
    return tmp_path


@pytest.mark.parametrize(("modules", "message"), [
    ("nope.module", "REFRESHQ_TASK_MODULES: cannot import 'nope.module': No module named 'nope'"),
    ("jobs.named.builtin,boom_tasks", "importing 'boom_tasks' failed: RuntimeError: needs BOOM_CONFIG"),
    ("jobs..builtin_tasks", "'jobs..builtin_tasks' is not a module name"),
])
@pytest.mark.parametrize("command", [("worker", "--burst"), ("scheduler",)])
def test_a_bad_task_module_stops_the_worker_and_the_scheduler_at_start(
    conn: redis.Redis, tenv: dict[str, str], tmp_path: Path, modules: str, message: str, command: tuple[str, ...]
) -> None:
    # waiting for a worker that can run it
    job_id = runs.enqueue_task(conn, registry().get("t-add"), [1, 2], modules=registry().modules)
    before = stored_keys(conn)
    bad_env = {**tenv, "REFRESHQ_TASK_MODULES": modules,
               "PYTHONPATH": f"{_bad_module_dir(tmp_path)}:{tenv['PYTHONPATH']}"}
    started = time.monotonic()
    _refused(command, bad_env, message)
    assert time.monotonic() - started < 30  # it stops at once: a scheduler would otherwise run forever
    assert stored_keys(conn) == before  # no worker registered, no scheduler lock or heartbeat
    assert conn.get(keys.SCHEDULER_LOCK) is None and not conn.smembers("rq:workers")
    assert queues.queue(conn, queues.NORMAL).job_ids == [job_id]  # the job was not taken and failed


def test_good_task_modules_still_start_a_worker(conn: redis.Redis, tenv: dict[str, str]) -> None:
    job_id = runs.enqueue_task(conn, registry().get("t-add"), [1, 2], modules=registry().modules)
    result = run_cli("worker", "--burst", "--queue", "normal", env=tenv)
    assert result.returncode == 0, result.stderr
    assert runs.get_result(job_id, timeout=5, conn=conn) == 3
