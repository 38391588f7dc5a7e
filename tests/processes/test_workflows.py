"""Chains (in order; a failed step stops the rest) and batches (in parallel, progress, callback after all)."""

from __future__ import annotations

import pytest
import redis
from rq.group import Group
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys
from jobs.errors import TaskArgumentsError, UnknownTaskError, ValidationError, WorkflowNotFoundError
from jobs.named.workflows import Signature, batch, chain, get_workflow, wait_workflow
from tests.support import named_task_functions as f
from tests.support.helpers import wait_until, worker_process
from tests.support.named_helpers import drain_all, trace


def _statuses(record: dict[str, object]) -> list[str]:
    return [item["status"] for item in record["items"]]  # type: ignore[attr-defined]


def test_a_chain_runs_its_steps_in_order(conn: redis.Redis, tenv: dict[str, str]) -> None:
    # Steps on different queues (t-step is HIGH, t-add NORMAL): the order comes from the dependencies.
    chain_id = chain(f.step.s("first"), f.add.s(1, 2), f.step.s("last")).delay()
    assert _statuses(get_workflow(conn, chain_id)) == ["PENDING", "WAITING", "WAITING"]
    drain_all(conn)
    record = get_workflow(conn, chain_id)
    assert trace(conn) == ["first", "add 1 2", "last"]
    assert record["status"] == "SUCCEEDED" and _statuses(record) == ["SUCCEEDED"] * 3
    assert record["items"][1]["detail"] == "3"


def test_a_failed_step_stops_the_chain_and_marks_the_rest(conn: redis.Redis, tenv: dict[str, str]) -> None:
    chain_id = chain(f.step.s("a"), f.fail.s("stop"), f.step.s("c"), f.step.s("d")).delay()
    drain_all(conn)
    record = get_workflow(conn, chain_id)
    assert trace(conn) == ["a", "fail stop"]
    assert record["status"] == "FAILED"
    assert _statuses(record) == ["SUCCEEDED", "FAILED", "CANCELLED", "CANCELLED"]
    assert record["items"][1]["detail"] == "ValueError: stop"
    assert record["items"][2]["detail"] == "not run: step 1 failed"
    for item in record["items"][2:]:
        assert Job.fetch(item["job_id"], connection=conn, serializer=JSONSerializer).get_status() == JobStatus.CANCELED


def test_a_chain_whose_worker_died_is_stopped_when_read(conn: redis.Redis, tenv: dict[str, str]) -> None:
    chain_id = chain(f.step.s("a"), f.step.s("b"), f.step.s("c")).delay()
    first = get_workflow(conn, chain_id)["items"][0]["job_id"]
    # As RQ leaves a job whose work-horse was killed: failed, off its queue, and no failure callback ran.
    conn.lrem("rq:queue:high", 0, first)
    conn.hset(Job.key_for(first), "status", "failed")
    assert _statuses(get_workflow(conn, chain_id)) == ["FAILED", "CANCELLED", "CANCELLED"]
    drain_all(conn)
    assert trace(conn) == []


def test_a_batch_reports_progress_as_members_finish_then_runs_its_callback(
    conn: redis.Redis, tenv: dict[str, str]
) -> None:
    members = [f.slow.s(0.3, f"m{i}") for i in range(3)]
    batch_id = batch(members, callback=f.step.s("callback")).delay()
    assert {j.id for j in Group.fetch(batch_id, conn).get_jobs()} == {
        item["job_id"] for item in get_workflow(conn, batch_id)["items"]
    }
    seen: list[int] = []

    def progress() -> bool:
        record = get_workflow(conn, batch_id)
        if not seen or seen[-1] != record["progress"]["done"]:
            seen.append(record["progress"]["done"])
        return bool(record["callback"]["status"] == "SUCCEEDED")

    with worker_process(tenv, "--queue", "low", "--queue", "high"):  # one worker: members end one by one
        wait_until(progress, 30, 0.02, "the batch and its callback")
    assert seen == [0, 1, 2, 3]
    record = get_workflow(conn, batch_id)
    assert record["status"] == "SUCCEEDED" and record["progress"] == {
        "total": 3, "done": 3, "succeeded": 3, "failed": 0, "pending": 0,
    }
    assert trace(conn)[-1] == "callback"  # after every member


def test_a_batch_callback_runs_even_when_members_fail(conn: redis.Redis, tenv: dict[str, str]) -> None:
    batch_id = batch([f.fail.s("m1"), f.add.s(2, 2), f.fail.s("m3")], callback=f.step.s("after")).delay()
    drain_all(conn)
    record = wait_workflow(conn, batch_id, timeout=5)
    assert record["progress"] == {"total": 3, "done": 3, "succeeded": 1, "failed": 2, "pending": 0}
    assert record["callback"]["status"] == "SUCCEEDED" and record["status"] == "FAILED"
    assert trace(conn)[-1] == "after"


def test_bad_workflows_are_refused_before_anything_is_stored(conn: redis.Redis, tenv: dict[str, str]) -> None:
    with pytest.raises(TaskArgumentsError):
        f.add.s(1, {1, 2})
    with pytest.raises(TaskArgumentsError, match="do not fit"):
        f.add.s(1)
    with pytest.raises(UnknownTaskError):
        chain(f.step.s("a"), Signature("no-such-task")).delay()
    with pytest.raises(ValidationError):
        chain()
    with pytest.raises(ValidationError):
        batch([])
    assert not conn.keys(keys.workflow("*")) and not conn.keys("rq:job:*")
    with pytest.raises(WorkflowNotFoundError):
        get_workflow(conn, "chain-nope")
