"""Chains and batches of named tasks, on RQ dependencies and groups.

`chain(a.s(1), b.s(), c.s())` runs its steps in order: each step's job depends on the previous one, so
RQ enqueues it only after that one finished; when a step fails for good, the steps after it are
cancelled and the chain record says so. `batch([a.s(1), a.s(2)], callback=b.s())` runs its members in
parallel as one RQ group; the callback depends on all members with failures allowed, so it runs once
every member ended either way. A record per chain or batch (kept a week) shows every item's status.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.group import Group
from rq.job import Dependency, Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.context import process_settings
from jobs.errors import TaskTimeoutError, ValidationError, WorkflowNotFoundError
from jobs.named import runs
from jobs.named.catalog import TaskCatalog, configured_tasks
from jobs.named.definitions import TaskDefinition
from jobs.redis_values import as_text_map
from jobs.statuses import CANCELLED, ENDED, FAILED, PENDING, RUNNING, SUCCEEDED, UNKNOWN, from_rq

CHAIN, BATCH = "chain", "batch"
RECORD_TTL = 7 * 86_400
CALLBACK = "callback"


@dataclass(frozen=True)
class Signature:
    """A task with its arguments, checked (JSON, fits the function) when made: `task.s(*args, **kwargs)`."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, definition: TaskDefinition, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Signature:
        plain_args, plain_kwargs = runs.check_arguments(definition, args, kwargs)
        return cls(definition.name, plain_args, plain_kwargs)


@dataclass(frozen=True)
class Chain:
    steps: tuple[Signature, ...]

    def delay(self, conn: redis.Redis | None = None, registry: TaskCatalog | None = None) -> str:
        """Enqueue the chain; returns its id (see `get_workflow`)."""
        settings = process_settings()  # a library entry point: read once, here, and passed down
        return _start_chain(
            conn or runs.default_connection(settings), registry or configured_tasks(settings), self.steps
        )


@dataclass(frozen=True)
class Batch:
    members: tuple[Signature, ...]
    callback: Signature | None = None

    def delay(self, conn: redis.Redis | None = None, registry: TaskCatalog | None = None) -> str:
        """Enqueue the batch; returns its id (see `get_workflow`)."""
        settings = process_settings()  # a library entry point: read once, here, and passed down
        return _start_batch(conn or runs.default_connection(settings), registry or configured_tasks(settings), self)


def chain(*steps: Signature) -> Chain:
    if not steps:
        raise ValidationError("a chain needs at least one step")
    return Chain(tuple(steps))


def batch(members: Sequence[Signature], callback: Signature | None = None) -> Batch:
    if not members:
        raise ValidationError("a batch needs at least one member")
    return Batch(tuple(members), callback)


def _new_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def _prepare(
    registry: TaskCatalog, signatures: Sequence[Signature], workflow_id: str, kind: str, labels: Sequence[str]
) -> list[tuple[TaskDefinition, Signature, dict[str, Any]]]:
    """Each item's definition, signature and RQ options; every task is looked up before anything is stored."""
    items = []
    for label, signature in zip(labels, signatures, strict=True):
        definition = registry.get(signature.task)
        runs.check_arguments(definition, signature.args, signature.kwargs)
        meta = {"workflow": workflow_id, "workflow_kind": kind, "item": label}
        options = runs.job_options(definition, runs.new_job_id(definition.name), meta, CALLBACKS)
        items.append((definition, signature, options))
    return items


def _store(conn: redis.Redis, workflow_id: str, kind: str, items: list[dict[str, str]], callback: str) -> None:
    key = keys.workflow(workflow_id)
    with conn.pipeline() as pipe:
        pipe.hset(key, mapping={"id": workflow_id, "kind": kind, "created_at": datetime.now(UTC).isoformat(),
                                "items": json.dumps(items, ensure_ascii=False), "callback": callback})
        pipe.expire(key, RECORD_TTL)
        pipe.execute()


def _queue(conn: redis.Redis, definition: TaskDefinition) -> Queue:
    return queues.queue(conn, definition.queue)


def _run_args(signature: Signature) -> list[Any]:
    return [signature.task, signature.args, signature.kwargs]


def _start_chain(conn: redis.Redis, registry: TaskCatalog, steps: Sequence[Signature]) -> str:
    workflow_id = _new_id(CHAIN)
    items = _prepare(registry, steps, workflow_id, CHAIN, [str(i) for i in range(len(steps))])
    _store(conn, workflow_id, CHAIN, [{"task": s.task, "job_id": o["job_id"]} for _, s, o in items], "")
    # The first step is saved but enqueued last, so every later step is already registered as a dependent
    # before anything runs (a step that ended before its dependent registered would strand it).
    definition, signature, options = items[0]
    first = _queue(conn, definition).create_job(runs.RUN_FUNC, args=_run_args(signature),
                                                status=JobStatus.CREATED, **options)
    first.save()
    previous = first.id
    for definition, signature, options in items[1:]:
        _queue(conn, definition).enqueue_call(runs.RUN_FUNC, args=_run_args(signature), depends_on=previous, **options)
        previous = options["job_id"]
    _queue(conn, items[0][0]).enqueue_job(first)
    return workflow_id


def _start_batch(conn: redis.Redis, registry: TaskCatalog, spec: Batch) -> str:
    workflow_id = _new_id(BATCH)
    members = _prepare(registry, spec.members, workflow_id, BATCH, [str(i) for i in range(len(spec.members))])
    callback = _prepare(registry, [spec.callback], workflow_id, BATCH, [CALLBACK])[0] if spec.callback else None
    records = [{"task": s.task, "job_id": o["job_id"]} for _, s, o in members]
    cb_record = json.dumps({"task": callback[1].task, "job_id": callback[2]["job_id"]}) if callback else ""
    _store(conn, workflow_id, BATCH, records, cb_record)
    if callback is not None:
        # Members exist (not yet queued) before the callback registers as their dependent, for the same
        # reason as in a chain; allow_failure: the callback runs once all ended, succeeded or not.
        for definition, signature, options in members:
            _queue(conn, definition).create_job(runs.RUN_FUNC, args=_run_args(signature),
                                                status=JobStatus.CREATED, **options).save()
        definition, signature, options = callback
        member_ids = [o["job_id"] for _, _, o in members]
        _queue(conn, definition).enqueue_call(runs.RUN_FUNC, args=_run_args(signature),
                                              depends_on=Dependency(jobs=member_ids, allow_failure=True), **options)
    group = Group.create(conn, name=workflow_id)
    by_queue: dict[str, list[Any]] = defaultdict(list)
    for definition, signature, options in members:
        by_queue[definition.queue].append(Queue.prepare_data(runs.RUN_FUNC, args=_run_args(signature), **options))
    for queue_name, datas in by_queue.items():
        group.enqueue_many(queues.queue(conn, queue_name), datas)
    return workflow_id


def on_run_success(job: Job, connection: redis.Redis, _result: Any) -> None:
    """RQ success callback of a chain's step or a batch's member or callback."""
    note_item_ended(connection, job.meta, job.id, SUCCEEDED, runs.success_entry(connection, job))


def on_run_failure(
    job: Job, connection: redis.Redis, exc_type: type[BaseException] | None = None,
    exc_value: BaseException | None = None, _tb: Any = None,
) -> None:
    """RQ failure callback of a chain's step or a batch's member or callback (also when its worker died)."""
    if (entry := runs.failure_entry(job, exc_type, exc_value)) is not None:
        note_item_ended(connection, job.meta, job.id, FAILED, entry)


# Attached to every run of a chain or batch.
CALLBACKS = runs.RunCallbacks(f"{__name__}.on_run_success", f"{__name__}.on_run_failure")


def note_item_ended(
    conn: redis.Redis, meta: Mapping[str, Any], job_id: str, status: str, entry: Mapping[str, Any] | None
) -> None:
    """When a run ends: its item in the chain or batch says so; a failed chain step stops the chain."""
    workflow_id, item = meta.get("workflow"), meta.get("item")
    if not workflow_id or item is None:
        return
    key = keys.workflow(str(workflow_id))
    if not conn.exists(key):
        return
    detail = (entry or {}).get("result" if status == SUCCEEDED else "error") or ""
    conn.hset(key, mapping={f"status:{item}": status, f"detail:{item}": str(detail)[:500]})
    if status == FAILED and meta.get("workflow_kind") == CHAIN:
        _cancel_after(conn, str(workflow_id), int(item))


def _cancel_after(conn: redis.Redis, workflow_id: str, failed_step: int) -> None:
    """Cancel the steps after a failed one (still deferred in RQ) and mark them in the chain record."""
    raw = as_text_map(conn.hgetall(keys.workflow(workflow_id)))
    steps = json.loads(raw.get("items") or "[]")
    for index in range(failed_step + 1, len(steps)):
        if raw.get(f"status:{index}") in ENDED:
            continue
        try:
            job = Job.fetch(steps[index]["job_id"], connection=conn, serializer=JSONSerializer)
            if job.get_status() in (JobStatus.DEFERRED, JobStatus.QUEUED, JobStatus.CREATED):  # not yet running
                job.cancel()
        except Exception:
            pass  # gone or already ended: the record below is what the chain shows
        conn.hset(keys.workflow(workflow_id), mapping={
            f"status:{index}": CANCELLED, f"detail:{index}": f"not run: step {failed_step} failed",
        })


def get_workflow(conn: redis.Redis, workflow_id: str) -> dict[str, Any]:
    """A chain or batch: each item's task, job and status, the overall status and (for a batch) progress."""
    raw = as_text_map(conn.hgetall(keys.workflow(workflow_id)))
    if not raw:
        raise WorkflowNotFoundError(f"no chain or batch {workflow_id!r} (records are kept {RECORD_TTL // 86400} days)")
    items = [_item(conn, raw, str(i), it) for i, it in enumerate(json.loads(raw["items"]))]
    if raw["kind"] == CHAIN and any(it["status"] == FAILED for it in items):
        failed = next(i for i, it in enumerate(items) if it["status"] == FAILED)
        if any(it["status"] not in ENDED for it in items[failed + 1:]):
            _cancel_after(conn, workflow_id, failed)  # its worker died before it could stop the chain
            return get_workflow(conn, workflow_id)
    callback = _item(conn, raw, CALLBACK, json.loads(raw["callback"])) if raw.get("callback") else None
    done = sum(it["status"] in ENDED for it in items)
    return {
        "id": workflow_id, "kind": raw["kind"], "created_at": raw["created_at"], "items": items,
        "callback": callback, "status": _overall(raw["kind"], items, callback),
        "progress": {"total": len(items), "done": done, "succeeded": sum(it["status"] == SUCCEEDED for it in items),
                     "failed": sum(it["status"] == FAILED for it in items), "pending": len(items) - done},
    }


def _item(conn: redis.Redis, raw: Mapping[str, str], label: str, item: Mapping[str, str]) -> dict[str, Any]:
    status = raw.get(f"status:{label}")
    if not status:
        rq_status = conn.hget(Job.key_for(item["job_id"]), "status")
        status = from_rq(rq_status)
    return {"task": item["task"], "job_id": item["job_id"], "status": status,
            "detail": raw.get(f"detail:{label}") or None}


def _overall(kind: str, items: list[dict[str, Any]], callback: dict[str, Any] | None) -> str:
    statuses = [it["status"] for it in items] + ([callback["status"]] if callback else [])
    if kind == CHAIN and FAILED in statuses:
        return FAILED
    if any(s not in ENDED for s in statuses):
        return RUNNING if any(s != PENDING for s in statuses) else PENDING
    return FAILED if FAILED in statuses or UNKNOWN in statuses else SUCCEEDED


def wait_workflow(conn: redis.Redis, workflow_id: str, timeout: float = 60, poll: float = 0.1) -> dict[str, Any]:
    """Poll until the chain or batch has ended (all items and the callback); returns its final record."""
    deadline = time.monotonic() + timeout
    while True:
        record = get_workflow(conn, workflow_id)
        items = record["items"] + ([record["callback"]] if record["callback"] else [])
        if all(it["status"] in ENDED for it in items):
            return record
        if time.monotonic() >= deadline:
            raise TaskTimeoutError(f"{record['kind']} {workflow_id} still {record['status']} after {timeout:g} s")
        time.sleep(poll)
