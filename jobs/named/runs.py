"""Running named tasks on RQ: enqueueing (JSON arguments only), the one wrapper every run goes through,
and waiting for results.

Every run is an RQ job of `run_named_task(name, args, kwargs)` on the task's priority queue, with the
task's time limit as the job timeout and its retry policy as RQ's `Retry`. The wrapper finds the task
by name in REFRESHQ_TASK_MODULES, records the history of its attempts and calls the hooks. What a schedule or
a chain must do when one of its runs ends is attached to the run as RQ callbacks, by name (RunCallbacks):
this module knows neither.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
import secrets
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Callback, Job, JobStatus, get_current_job
from rq.serializers import JSONSerializer

from jobs import owners, queues
from jobs.config import Settings
from jobs.context import process_settings, running_job
from jobs.errors import (
    TaskArgumentsError,
    TaskEnvironmentError,
    TaskExecutionError,
    TaskTimeoutError,
    UnknownTaskError,
)
from jobs.named import arguments, history
from jobs.named.catalog import configured_tasks
from jobs.named.definitions import TaskDefinition, rq_retry
from jobs.owners import Owner
from jobs.statuses import FAILED, SUCCEEDED, is_live

log = logging.getLogger("refreshq.tasks")

# By the dotted name RQ stores.
RUN_FUNC = "jobs.named.runs.run_named_task"
RUN_FUNCS = frozenset({RUN_FUNC})
# Results stay readable for get_result and the dashboard for a day; failures as long as RQ's default.
RESULT_TTL = 86_400


@dataclass(frozen=True)
class RunCallbacks:
    """What to call when a run ends, by dotted name (RQ's `Callback`): `success(job, connection, result)`,
    `failure(job, connection, exc_type, exc_value, traceback)` -- also for a run whose worker died."""

    success: str
    failure: str

    def options(self) -> dict[str, Callback]:
        return {"on_success": Callback(self.success), "on_failure": Callback(self.failure)}


def check_arguments(
    definition: TaskDefinition, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as the worker will see them (a JSON round trip), or TaskArgumentsError: not JSON, not
    fitting the signature, or not of the parameters' annotated types (see jobs.arguments)."""
    try:
        plain_args, plain_kwargs = arguments.as_json(args, kwargs)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TaskArgumentsError(
            f"arguments of task {definition.name} must be JSON-serializable (str, number, bool, null, list, "
            f"object): {exc}"
        ) from None
    problem = arguments.check_call(definition.func, plain_args, plain_kwargs)
    if problem is not None:
        fits = f"{definition.name}{_plain_signature(definition)}"
        raise TaskArgumentsError(f"arguments do not fit task {fits}: {problem}")
    return plain_args, plain_kwargs


def _plain_signature(definition: TaskDefinition) -> str:
    """`(older_than_days=7.0, statuses=None)`: the parameters without their annotations, for messages."""
    signature = inspect.signature(definition.func)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


def new_job_id(task_name: str) -> str:
    """`cleanup-20261122T143052-5f3a9c1d`: the task's name, when, and a random part."""
    return f"{task_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def job_options(
    definition: TaskDefinition, job_id: str, meta: Mapping[str, Any] | None = None,
    callbacks: RunCallbacks | None = None,
) -> dict[str, Any]:
    """RQ options of one run: time limit, retry policy, result lifetime, what to call when it ends."""
    return {
        "job_id": job_id,
        "timeout": definition.time_limit,
        "result_ttl": RESULT_TTL,
        "retry": rq_retry(definition.retry),
        "meta": {"task": definition.name, "attempt": 0, **(meta or {})},
        "description": f"task {definition.name}",
        **(callbacks.options() if callbacks is not None else {}),
    }


def enqueue_task(
    conn: redis.Redis, definition: TaskDefinition, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
    *, meta: Mapping[str, Any] | None = None, pipeline: redis.client.Pipeline | None = None,
    callbacks: RunCallbacks | None = None, modules: Sequence[str], owner: Owner | None = None,
) -> str:
    """Enqueue one run; with `pipeline` (already in MULTI) it is queued inside the caller's transaction.
    `modules`: REFRESHQ_TASK_MODULES of the workers (the caller's settings say which). A run records its
    owner (the CLI's by default); a limited owner's is checked against their limits in the transaction
    that enqueues it (jobs.owners)."""
    _check_configured(definition, modules)
    plain_args, plain_kwargs = check_arguments(definition, args, kwargs or {})
    owner = owner or Owner()
    options = job_options(definition, new_job_id(definition.name), {"owner": owner.name, **(meta or {})}, callbacks)
    call = {"args": [definition.name, plain_args, plain_kwargs], **options}
    if pipeline is not None or not owner.limited:
        queues.queue(conn, definition.queue).enqueue_call(RUN_FUNC, pipeline=pipeline, **call)
        return str(options["job_id"])
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(*owners.watched_keys(owner))  # type: ignore[no-untyped-call]
                seen = owners.admit(conn, pipe, owner)
                pipe.multi()
                queues.queue(conn, definition.queue).enqueue_call(RUN_FUNC, pipeline=pipe, **call)
                owners.note_run(pipe, owner, str(options["job_id"]), seen)
                pipe.execute()
                return str(options["job_id"])
            except redis.WatchError:
                continue


def _check_configured(definition: TaskDefinition, modules: Sequence[str]) -> None:
    """Refuse a task the workers would not find: its module is not in REFRESHQ_TASK_MODULES."""
    if definition.module not in modules:
        raise TaskArgumentsError(
            f"task {definition.name} is defined in {definition.module}, which REFRESHQ_TASK_MODULES "
            f"({','.join(modules)}) does not list: workers would not find it"
        )


_default_conns: dict[str, redis.Redis] = {}


def default_connection(settings: Settings) -> redis.Redis:
    """Inside a job: the worker's connection. Elsewhere: one to the server of `settings` (kept per server)."""
    job = get_current_job()
    if job is not None:
        return job.connection
    key = settings.server.redis_url or str(settings.server.data_dir)
    if key not in _default_conns:
        from jobs.connection import connect

        _default_conns[key] = connect(settings)
    return _default_conns[key]


@dataclass(frozen=True)
class RunContext:
    """What a running task may want to know about its run (see `current_run()`)."""

    task: str
    job_id: str
    attempt: int
    conn: redis.Redis
    settings: Settings
    schedule: str | None
    workflow: str | None


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("refreshq_run", default=None)


def current_run() -> RunContext:
    run = _current.get()
    if run is None:
        raise RuntimeError("current_run() is only available inside a named task run by a worker")
    return run


def run_named_task(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The RQ job function of every named-task run: history, hooks, then the task itself."""
    job, job_context = running_job()
    settings = job_context.settings
    attempt = int(job.meta.get("attempt") or 0) + 1
    job.meta["attempt"] = attempt  # counts every attempt, whoever requeued it (RQ Retry, sweeper)
    job.save_meta()  # type: ignore[no-untyped-call]
    trigger = _trigger_of(job.meta)
    queued = job.enqueued_at.replace(tzinfo=UTC).timestamp() if job.enqueued_at else None
    definition: TaskDefinition | None = None
    try:
        # The worker's own task and signature: the enqueuer's REFRESHQ_TASK_MODULES or code may differ.
        definition = configured_tasks(settings).get(name)
        args, kwargs = check_arguments(definition, args, kwargs)
    except (UnknownTaskError, TaskArgumentsError) as exc:
        _refuse(job, name, attempt, _bounds(definition), trigger, queued, exc)
        raise
    bounds = _bounds(definition)
    entry_id = history.record_start(job.connection, name, job.id, attempt, bounds, trigger, queued_ts=queued)
    run = RunContext(name, job.id, attempt, job.connection, settings, job.meta.get("schedule"),
                     job.meta.get("workflow"))
    token = _current.set(run)
    try:
        result = _run_with_hooks(definition, args, kwargs)
    except BaseException as exc:
        if job.retries_left and not definition.retry.allows(attempt, exc):
            job.retries_left = 0  # its policy's retry_when says no: this failure is final (RQ reads it after)
        retrying = bool(job.retries_left)
        history.record_end(job.connection, name, entry_id, FAILED, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc(), retrying=retrying)
        _call_failure_hook(definition, exc)
        raise
    finally:
        _current.reset(token)
    history.record_end(job.connection, name, entry_id, SUCCEEDED, result=result)
    return result


def _bounds(definition: TaskDefinition | None) -> history.Bounds:
    if definition is None:
        return history.Bounds()
    return history.Bounds(definition.history_limit, definition.history_days)


def _refuse(job: Job, name: str, attempt: int, bounds: history.Bounds, trigger: str, queued: float | None,
            exc: Exception) -> None:
    """A run this worker cannot run as asked (no such task here, arguments that do not fit it): recorded in
    the history as a failed attempt, and final -- RQ's `Retry` would run it again as if it were transient,
    and it would fail again the same way."""
    job.retries_left = 0  # read by RQ's failure handling and by failure_entry, after this raises
    entry_id = history.record_start(job.connection, name, job.id, attempt, bounds, trigger, queued_ts=queued)
    history.record_end(job.connection, name, entry_id, FAILED, error=f"{type(exc).__name__}: {exc}")


def _trigger_of(meta: Mapping[str, Any]) -> str:
    if meta.get("schedule"):
        return f"schedule {meta['schedule']}"
    if meta.get("workflow"):
        return f"{meta.get('workflow_kind', 'workflow')} {meta['workflow']}"
    return "manual"


def _run_with_hooks(definition: TaskDefinition, args: list[Any], kwargs: dict[str, Any]) -> Any:
    hooks = definition.hooks
    if hooks.validate is not None and not hooks.validate():
        raise TaskEnvironmentError(f"task {definition.name}: its environment check refused to run it")
    if hooks.before is not None:
        hooks.before()
    result = definition.func(*args, **kwargs)
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskExecutionError(f"task {definition.name} returned a value that is not JSON: {exc}") from None
    if hooks.after is not None:
        hooks.after(result)
    return result


def _call_failure_hook(definition: TaskDefinition, exc: BaseException) -> None:
    if definition.hooks.on_failure is None:
        return
    try:
        definition.hooks.on_failure(exc)
    except Exception:
        # The task's own error is what the history and RQ must show, not the hook's.
        log.exception("task %s: on_failure hook failed", definition.name)


def success_entry(conn: redis.Redis, job: Job) -> dict[str, Any] | None:
    """For a success callback: the history record of the run's attempt that just succeeded."""
    entry_id = history.attempt_id(job.id, int(job.meta.get("attempt") or 0))
    return history.entry(conn, str(job.meta.get("task")), entry_id)


def failure_entry(
    job: Job, exc_type: type[BaseException] | None, exc_value: BaseException | None
) -> dict[str, Any] | None:
    """For a failure callback: what ended the run, or None while RQ will run it again (only a final
    failure ends a schedule's run or a chain's step)."""
    if job.retries_left:
        return None
    error = f"{exc_type.__name__}: {exc_value}" if exc_type is not None else "failed"
    return {"error": error, "ended_at": history.iso(time.time())}


def get_result(run_id: str, timeout: float = 60, conn: redis.Redis | None = None, poll: float = 0.1) -> Any:
    """Wait for a run and return its result; TaskExecutionError if it failed, TaskTimeoutError if still going.
    A library entry point: without `conn`, this process's settings say which server (read once, here)."""
    conn = conn or default_connection(process_settings())
    job = Job.fetch(run_id, connection=conn, serializer=JSONSerializer)
    deadline = time.monotonic() + timeout
    while True:
        status = job.get_status(refresh=True)
        if status == JobStatus.FINISHED:
            return job.return_value(refresh=True)
        if not is_live(status):
            result = job.latest_result()
            detail = _last_line(getattr(result, "exc_string", None) or job.exc_info or str(status))
            raise TaskExecutionError(f"task run {run_id} {status.value}: {detail}")
        if time.monotonic() >= deadline:
            raise TaskTimeoutError(f"task run {run_id} still {status.value} after {timeout:g} s")
        time.sleep(poll)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text
