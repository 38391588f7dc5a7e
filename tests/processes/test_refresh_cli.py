"""The refresh, task and data commands through the installed `refreshq` console script, as a user runs
them: real server, real workers, the built-in sample or a loopback HTTP upstream."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs import keys, queues
from jobs.config import Settings
from jobs.refresh.job import PLAN_FUNC
from jobs.refresh.manager import SyncTaskManager
from jobs.refresh.published import CSV_FIELDS
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import start_background
from tests.support.helpers import (
    RefusingDirectory,
    checksum,
    drain,
    exported,
    province_hospitals,
    redis_keys_holding,
    run_cli,
    worker_process,
)

SCALE = 3000
TOKEN = "secret-xyz"


def last_json(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def jsonl(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def nothing_enqueued(conn: redis.Redis) -> None:
    assert list(conn.scan_iter(match=keys.task("*"))) == []
    assert conn.zcard(keys.TASKS_BY_CREATED) == 0
    assert queues.queue(conn, queues.REFRESH).count == 0
    assert list(conn.scan_iter(match="rq:job:*")) == []


@pytest.fixture
def sample_env(env: dict[str, str]) -> dict[str, str]:
    """A refreshq environment on the built-in sample at a small scale."""
    return {**env, "REFRESHQ_SAMPLE_SCALE": str(SCALE)}


# -- refresh -----------------------------------------------------------------------------------------


def test_refresh_province_wait_json_over_http(env: dict[str, str], conn: redis.Redis) -> None:
    with start_background(SCALE) as upstream:
        cli_env = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url}
        with worker_process(cli_env):
            done = run_cli("refresh", "province", "广东", "--wait", "--json", env=cli_env, timeout=120)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)  # the one document on stdout: the task id is in it (and on stderr)
    task_id = status["task_id"]
    assert task_id.startswith("task_") and f"refreshq: refresh {task_id}" in done.stderr
    assert status["status"] == "SUCCEEDED"
    assert status["task_id"] == task_id and status["hospital_name"] == "广东省" and status["query"] == "广东"
    assert status["progress"] == 100
    expected = province_hospitals(SampleDirectory(SCALE), "44")
    assert status["statistics"]["hospitals_found"] == len(expected)
    assert checksum(exported(conn, "440000")) == checksum(expected)


@pytest.mark.slow
def test_refresh_full_then_the_data_commands(sample_env: dict[str, str], conn: redis.Redis, tmp_path: Path) -> None:
    with worker_process(sample_env), worker_process(sample_env):  # two workers share one refresh
        done = run_cli("refresh", "full", "--wait", "--json", env=sample_env, timeout=180)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert status["status"] == "SUCCEEDED" and status["hospital_name"] == "全量刷新"
    assert status["statistics"]["provinces_processed"] == 34
    assert status["statistics"]["hospitals_found"] == SCALE
    sample = SampleDirectory(SCALE)
    everything = checksum(sample.all_hospitals())

    # Export as JSON lines to standard output: exactly the sample.
    jsonl_export = run_cli("data", "export", "--format", "jsonl", env=sample_env)
    assert jsonl_export.returncode == 0, jsonl_export.stderr
    assert checksum(jsonl(jsonl_export.stdout)) == everything
    assert f"exported {SCALE} records" in jsonl_export.stderr

    # CSV to a file: every field kept, read back with the csv module.
    out = tmp_path / "hospitals.csv"
    csv_export = run_cli("data", "export", "--format", "csv", "--output", str(out), env=sample_env)
    assert csv_export.returncode == 0, csv_export.stderr
    assert csv_export.stdout == ""
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [*CSV_FIELDS, "extra"]
        rows = list(reader)
    back = [{**{f: row[f] for f in CSV_FIELDS}, **(json.loads(row["extra"]) if row["extra"] else {})} for row in rows]
    assert checksum(back) == everything

    guangdong = province_hospitals(sample, "44")
    one = run_cli("data", "export", "--province", "广东", "--format", "jsonl", env=sample_env)
    assert one.returncode == 0, one.stderr
    assert checksum(jsonl(one.stdout)) == checksum(guangdong)

    stats = run_cli("data", "stats", env=sample_env)
    assert stats.returncode == 0, stats.stderr
    assert f"34 provinces, {SCALE} records" in stats.stdout
    assert "广东省" in stats.stdout

    # show: a city, as text and as JSON lines.
    guangzhou = [h for h in guangdong if str(h["region_code"]).startswith("4401")]
    shown = run_cli("data", "show", "广东省", "--city", "广州市", "--json", "--limit", "0", env=sample_env)
    assert shown.returncode == 0, shown.stderr
    assert checksum(jsonl(shown.stdout)) == checksum(guangzhou)
    text = run_cli("data", "show", "广东省", "--city", "广州市", env=sample_env)
    assert text.returncode == 0, text.stderr
    assert f"{min(50, len(guangzhou))} hospitals shown" in text.stdout
    listed = [line for line in text.stdout.splitlines() if line.startswith("H")]
    assert listed and all("广州市" in line for line in listed)
    yuexiu = run_cli("data", "show", "广东", "--district", "越秀区", "--json", "--limit", "0", env=sample_env)
    assert yuexiu.returncode == 0, yuexiu.stderr
    assert checksum(jsonl(yuexiu.stdout)) == checksum([h for h in guangzhou if h["region_code"] == "440104"])

    for args, words in (
        (("data", "show", "火星省"), ("unknown province", "火星省")),
        (("data", "show", "广东省", "--city", "火星市"), ("火星市",)),
    ):
        bad = run_cli(*args, env=sample_env)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert all(word in bad.stderr for word in words), bad.stderr
        assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(("name", "suggested"), [("广栋", True), ("999999", False)])
def test_an_unknown_province_exits_2_and_enqueues_nothing(
    name: str, suggested: bool, sample_env: dict[str, str], conn: redis.Redis
) -> None:
    result = run_cli("refresh", "province", name, "--wait", "--json", env=sample_env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "unknown province" in result.stderr and name in result.stderr
    assert "Traceback" not in result.stderr
    # A name close to a province's gets it suggested; a code like none gets no suggestion.
    assert ("closest" in result.stderr, "广东省" in result.stderr) == (suggested, suggested), result.stderr
    assert result.stdout == ""
    nothing_enqueued(conn)


# -- status, list, cancel, resume, cleanup -------------------------------------------------------------


@pytest.fixture
def ended_tasks(settings: Settings, conn: redis.Redis) -> Iterator[dict[str, str]]:
    """One task of each ended status: SUCCEEDED and FAILED after a real run, CANCELLED before starting."""
    manager = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": SCALE})
    with start_background(directory=RefusingDirectory(SCALE, {"310101"})) as refusing:
        failing = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": refusing.url})
        succeeded = manager.create_province_refresh_task("北京")
        failed = failing.create_province_refresh_task("上海")
        drain(conn)
    cancelled = manager.create_province_refresh_task("天津")
    assert manager.cancel_task(cancelled)
    tasks = {"SUCCEEDED": succeeded, "FAILED": failed, "CANCELLED": cancelled}
    for status, task_id in tasks.items():
        assert manager.get_task_status(task_id)["status"] == status
    yield tasks


def test_status_command(ended_tasks: dict[str, str], sample_env: dict[str, str]) -> None:
    task_id = ended_tasks["SUCCEEDED"]
    as_json = run_cli("status", task_id, "--json", env=sample_env)
    assert as_json.returncode == 0, as_json.stderr
    assert len(as_json.stdout.strip().splitlines()) == 1
    status = json.loads(as_json.stdout)
    assert status["task_id"] == task_id and status["status"] == "SUCCEEDED" and status["hospital_name"] == "北京市"
    assert {"progress", "current_step", "statistics", "started_at", "finished_at", "failed_regions"} <= set(status)

    failed = json.loads(run_cli("status", ended_tasks["FAILED"], "--json", env=sample_env).stdout)
    assert failed["status"] == "FAILED"
    assert [(r["code"], r["name"]) for r in failed["failed_regions"]] == [("310101", "黄浦区")]
    assert failed["error_message"]

    text = run_cli("status", task_id, env=sample_env)
    assert text.returncode == 0 and task_id in text.stdout and "SUCCEEDED" in text.stdout

    for unknown in ("task_20990101_000000_ffffff", "unknown"):
        missing = run_cli("status", unknown, "--json", env=sample_env)
        assert missing.returncode == 2, missing.stderr  # not found: bad input, as an unknown schedule
        assert unknown in missing.stderr and missing.stdout == ""


def test_list_command(ended_tasks: dict[str, str], sample_env: dict[str, str]) -> None:
    everything = run_cli("list", "--json", env=sample_env)
    assert everything.returncode == 0, everything.stderr
    page = json.loads(everything.stdout)
    assert page["total"] == 3 and page["page"] == 1 and page["page_size"] == 10
    created = [ended_tasks[s] for s in ("SUCCEEDED", "FAILED", "CANCELLED")]
    # SUCCEEDED and FAILED were created in that order, CANCELLED after both.
    assert page["items"][0]["task_id"] == ended_tasks["CANCELLED"]
    assert {i["task_id"] for i in page["items"]} == set(created)

    failed = json.loads(run_cli("list", "--status", "FAILED", "--json", env=sample_env).stdout)
    assert [i["task_id"] for i in failed["items"]] == [ended_tasks["FAILED"]] and failed["total"] == 1
    text = run_cli("list", "--status", "FAILED", env=sample_env)
    assert text.returncode == 0, text.stderr
    assert "1 refreshes" in text.stdout and ended_tasks["FAILED"] in text.stdout
    assert ended_tasks["SUCCEEDED"] not in text.stdout

    asc = json.loads(run_cli("list", "--sort", "updated_at", "--order", "asc", "--page-size", "1", "--page", "3",
                             "--json", env=sample_env).stdout)
    assert asc["total"] == 3 and [i["task_id"] for i in asc["items"]] == [ended_tasks["CANCELLED"]]
    beyond = json.loads(run_cli("list", "--page", "9", "--json", env=sample_env).stdout)
    assert beyond["items"] == [] and beyond["total"] == 3

    for args in (("--sort", "nope"), ("--status", "DONE"), ("--page-size", "5000")):
        bad = run_cli("list", *args, env=sample_env)
        assert bad.returncode == 2, (args, bad.stderr)
        assert args[1] in bad.stderr and "Traceback" not in bad.stderr


def test_cancel_and_resume_commands(ended_tasks: dict[str, str], sample_env: dict[str, str],
                                    settings: Settings, conn: redis.Redis) -> None:
    succeeded = ended_tasks["SUCCEEDED"]
    finished = run_cli("cancel", succeeded, env=sample_env)
    assert finished.returncode == 1
    assert "SUCCEEDED" in finished.stderr and "nothing to cancel" in finished.stderr
    missing = run_cli("cancel", "task_20990101_000000_ffffff", env=sample_env)
    assert missing.returncode == 2 and "task_20990101_000000_ffffff" in missing.stderr

    resumed = run_cli("resume", succeeded, env=sample_env)
    assert resumed.returncode == 1, resumed.stderr
    assert "SUCCEEDED" in resumed.stderr and "only FAILED or CANCELLED" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    manager = SyncTaskManager(settings, conn)
    assert manager.get_task_status(succeeded)["status"] == "SUCCEEDED"

    # A queued task is cancelled by the command and never starts.
    queued = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": SCALE}).create_province_refresh_task(
        "河北"
    )
    cancelled = run_cli("cancel", queued, env=sample_env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert queued in cancelled.stdout
    assert manager.get_task_status(queued)["status"] == "CANCELLED"
    drain(conn)
    assert manager.get_task_status(queued)["started_at"] is None
    assert conn.hget(keys.PUBLISHED, "130000") is None


def test_cleanup_command(ended_tasks: dict[str, str], sample_env: dict[str, str], conn: redis.Redis) -> None:
    for value in ("abc", "7x"):
        bad = run_cli("cleanup", "--older-than", value, env=sample_env)
        assert bad.returncode == 2, (value, bad.stderr)
        assert "--older-than" in bad.stderr and "Traceback" not in bad.stderr
    refused = run_cli("cleanup", "--older-than", "0s", "--status", "RUNNING", env=sample_env)
    assert refused.returncode == 2
    assert json.loads(run_cli("list", "--json", env=sample_env).stdout)["total"] == 3

    kept = run_cli("cleanup", "--older-than", "7d", env=sample_env)
    assert kept.returncode == 0 and "removed 0 refreshes" in kept.stdout
    failed = run_cli("cleanup", "--older-than", "0s", "--status", "FAILED", env=sample_env)
    assert failed.returncode == 0 and "removed 1 refreshes" in failed.stdout, failed.stderr
    rest = run_cli("cleanup", "--older-than", "0s", env=sample_env)
    assert rest.returncode == 0 and "removed 2 refreshes" in rest.stdout, rest.stderr
    assert json.loads(run_cli("list", "--json", env=sample_env).stdout)["total"] == 0
    assert run_cli("status", ended_tasks["SUCCEEDED"], env=sample_env).returncode == 2
    # The published data stays.
    assert conn.hget(keys.PUBLISHED, "110000") == ended_tasks["SUCCEEDED"].encode()
    assert checksum(exported(conn, "110000")) == checksum(province_hospitals(SampleDirectory(SCALE), "11"))


# -- secrets -------------------------------------------------------------------------------------------


def test_the_upstream_token_is_never_stored_nor_printed(env: dict[str, str], conn: redis.Redis) -> None:
    outputs: list[str] = []
    with start_background(SCALE, token=TOKEN) as upstream:
        cli_env = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url, "REFRESHQ_UPSTREAM_TOKEN": TOKEN}
        with worker_process(cli_env):
            done = run_cli("refresh", "province", "北京", "--wait", "--json", env=cli_env, timeout=120)
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
        task_id = json.loads(done.stdout)["task_id"]
        for args in (("status", task_id, "--json"), ("list", "--json"), ("data", "show", "北京")):
            result = run_cli(*args, env=cli_env)
            assert result.returncode == 0, (args, result.stderr)
            outputs += [result.stdout, result.stderr]
        # With a wrong token (one that holds the right one, so a leak of it is caught too) the upstream
        # refuses: the failure is reported without leaking anything.
        wrong_env = {**cli_env, "REFRESHQ_UPSTREAM_TOKEN": "not-" + TOKEN}
        with worker_process(wrong_env):
            refused = run_cli("refresh", "province", "天津", "--wait", "--json", env=wrong_env, timeout=120)
        outputs += [refused.stdout, refused.stderr]
    assert last_json(done.stdout)["status"] == "SUCCEEDED"
    assert checksum(exported(conn, "110000")) == checksum(province_hospitals(SampleDirectory(SCALE), "11"))
    assert refused.returncode == 1, refused.stderr
    assert last_json(refused.stdout)["status"] == "FAILED"
    assert conn.dbsize() > 0
    assert redis_keys_holding(conn, TOKEN) == []
    assert all(TOKEN not in text for text in outputs)
    # The scan does look inside RQ's job data, which is zlib-compressed: the function name is only there.
    assert any(k.startswith("rq:job:") for k in redis_keys_holding(conn, PLAN_FUNC))


# -- out-of-range input: a message and a usage exit code, never a traceback ---------------------------


def test_an_export_to_an_unwritable_path_is_a_clear_error(sample_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "hospitals.csv"
    result = run_cli("data", "export", "--format", "csv", "--output", str(target), env=sample_env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert str(target) in result.stderr
    assert not target.exists()


def test_a_huge_cleanup_age_is_a_clear_error(ended_tasks: dict[str, str], sample_env: dict[str, str]) -> None:
    result = run_cli("cleanup", "--older-than", "99999999999d", env=sample_env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert "older" in result.stderr
    assert json.loads(run_cli("list", "--json", env=sample_env).stdout)["total"] == 3


def test_a_page_far_beyond_the_end_lists_nothing(ended_tasks: dict[str, str], sample_env: dict[str, str]) -> None:
    result = run_cli("list", "--page", "99999999999999999999", "--json", env=sample_env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert page["items"] == [] and page["total"] == 3
