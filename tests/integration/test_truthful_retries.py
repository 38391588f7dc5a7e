"""A named run that cannot succeed (its worker cannot find the task, its arguments do not fit the worker's
task) is not retried and shows why; attempt counts agree in the run, its history, the dead-letter registry
(numbers, not strings) and a refresh's status dict and error message."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from jobs import queues
from jobs.config import Settings
from jobs.duties.retries import RetryPolicy, sweep_failed_jobs
from jobs.named import history
from jobs.named.definitions import task_retry
from jobs.named.runs import enqueue_task
from tests.support.api_helpers import Api, make_api
from tests.support.helpers import run_cli
from tests.support.named_helpers import TASK_MODULES, drain_all, registry
from workers import build_worker
from workers.fast import FAST_QUEUES, build_fast_worker

# A policy whose retries wait: a retried run is parked by RQ as `scheduled`.
PATIENT = task_retry(3, 30)
BURY = RetryPolicy(base=0, factor=1, cap=0, max_retries=3)  # the sweeper's default count, no waiting


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def _worker_without_the_test_tasks(conn: redis.Redis, env: dict[str, str], fast: bool) -> None:
    """Drain the queues with a worker whose REFRESHQ_TASK_MODULES differ from the enqueuer's."""
    settings = Settings.from_env({**env, "REFRESHQ_TASK_MODULES": "jobs.named.builtin"})
    if fast:
        build_fast_worker(conn, FAST_QUEUES, settings=settings).work(burst=True, logging_level="WARNING")
    else:
        build_worker(conn, queues.ALL_QUEUES, settings=settings).work(burst=True, logging_level="WARNING")


def _fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def _not_retried(api: Api, env: dict[str, str], run_id: str, task: str, error: str) -> None:
    """The run failed once for good, and every view of it says so with its error."""
    job = _fetch(api.conn, run_id)
    assert job.get_status() == JobStatus.FAILED
    assert ScheduledJobRegistry(queue=queues.queue(api.conn, job.origin)).get_job_ids() == []  # type: ignore[no-untyped-call]
    run = api.get(f"/runs/{run_id}", "read").get_json()
    assert (run["state"], run["attempt"]) == ("failed", 1), run
    assert error in (run["error"] or ""), run
    _total, entries = history.page(api.conn, task)
    assert [(e["attempt"], e["status"], e["retrying"]) for e in entries] == [(1, "FAILED", False)]
    assert error in entries[0]["error"]
    shown = run_cli("tasks", "history", task, env=env).stdout
    assert "FAILED" in shown and error in shown and "will retry" not in shown, shown
    assert sweep_failed_jobs(api.conn, BURY, Settings.from_env()) == 1  # permanent: buried at once
    (dead,) = api.get("/failed", "read").get_json()["items"]
    assert (dead["job_id"], dead["kind"], dead["attempts"]) == (run_id, "permanent", 1)


@pytest.mark.parametrize("fast", [False, True], ids=["forking", "fast"])
def test_a_run_its_worker_cannot_find_is_not_retried_and_shows_why(api: Api, tenv: dict[str, str], fast: bool) -> None:
    definition = dataclasses.replace(registry().get("t-add"), retry=PATIENT)
    run_id = enqueue_task(api.conn, definition, (1, 2), modules=TASK_MODULES.split(","))
    _worker_without_the_test_tasks(api.conn, tenv, fast)
    _not_retried(api, tenv, run_id, "t-add", "UnknownTaskError: unknown task 't-add'")


def _three(a: int, b: int, c: int) -> int:
    return a + b + c


def test_a_run_whose_arguments_do_not_fit_its_workers_task_is_not_retried(api: Api, tenv: dict[str, str]) -> None:
    # The enqueuer's t-add takes three arguments; the worker's (tests/support/named_task_functions.py) two.
    theirs = dataclasses.replace(registry().get("t-add"), func=_three, retry=PATIENT)
    run_id = enqueue_task(api.conn, theirs, (1, 2, 3), modules=[__name__])
    drain_all(api.conn)
    _not_retried(api, tenv, run_id, "t-add", "TaskArgumentsError: arguments do not fit task t-add(a, b)")


def test_a_named_run_out_of_retries_is_buried_with_every_attempt_counted(api: Api, tenv: dict[str, str]) -> None:
    run_id = registry().get("t-flaky").delay(5)  # 3 attempts (2 retries, no delay), all failing
    drain_all(api.conn)
    assert api.get(f"/runs/{run_id}").get_json()["attempt"] == 3
    assert sweep_failed_jobs(api.conn, BURY, Settings.from_env()) == 1
    (listed,) = api.get("/failed").get_json()["items"]
    shown = api.get(f"/failed/{run_id}").get_json()
    cli_list = json.loads(run_cli("failed", "list", "--json", env=tenv).stdout)
    cli_show = json.loads(run_cli("failed", "show", run_id, env=tenv).stdout)
    assert [e["attempts"] for e in (listed, shown, *cli_list, cli_show)] == [3, 3, 3, 3]
    text = run_cli("failed", "list", env=tenv).stdout
    assert f"{run_id}  permanent attempts 3 " in text
