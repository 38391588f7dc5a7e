"""Scheduler duty: the retry sweeper. RQ's failed-job registries drive retries, with backoff, into a
dead-letter registry.

RQ's own `Retry` re-enqueues blindly (and only on a worker); refreshq needs to tell a transient
failure (an upstream error, a request timeout, a lost worker) from a permanent one (a validation
error, an unknown region, a hard time limit) and from a job that was stopped on purpose, to back
off exponentially, and to show the next retry on the task. So the scheduler sweeps the failed
registries itself. How to treat a failure was decided where it happened, by the exception's type, and
recorded (jobs.failures); the sweeper reads that record.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

import redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from jobs import failures, keys, queues
from jobs.config import Settings
from jobs.failures import NEVER as NEVER
from jobs.failures import PERMANENT as PERMANENT
from jobs.failures import TRANSIENT as TRANSIENT
from jobs.named.runs import RUN_FUNCS
from jobs.observe import counters
from jobs.redis_values import as_text, as_text_map
from jobs.refresh import records
from jobs.refresh.finish import end_province
from jobs.refresh.job import PLAN_FUNCS, PROVINCE_FUNCS, REFRESH_FUNCS, live_jobs
from jobs.retry_policy import RetryPolicy as RetryPolicy
from jobs.statuses import ACTIVE, FAILED, PENDING, RUNNING

log = logging.getLogger("refreshq.retries")

# A failure nobody recorded -- one of the previous layout, or a job run by a worker that is not
# refreshq's -- is classified once from RQ's text of it, by the exception names it mentions.
_TRANSIENT_NAMES = (
    "TransientUpstreamError", "UpstreamInconsistencyError", "AbandonedJobError", "ConnectionError", "TimeoutError",
    "TimeoutException", "ReadTimeout", "ConnectTimeout", "RemoteProtocolError", "BusyLoadingError", "OSError",
)
_NEVER_PATTERNS = ("stopped by user", "work-horse terminated")
STATE_TTL = 30 * 86_400


def policy_of(settings: Settings) -> RetryPolicy:
    """The refresh jobs' retry policy, as the settings say (REFRESHQ_RETRY_*)."""
    return RetryPolicy(settings.retry.base, settings.retry.factor, settings.retry.cap, settings.retry.max)


# Per job function; others get the default. Named tasks retry through RQ's `Retry` by their own policy
# (jobs.named.runs), so once one reaches the failed registry it is done.
POLICIES: dict[str, RetryPolicy] = {func: RetryPolicy(max_retries=0) for func in RUN_FUNCS}


def classify(exc_string: str) -> str:
    """TRANSIENT, PERMANENT or NEVER, from the failure text RQ stored (for failures nobody recorded)."""
    if any(p in exc_string for p in _NEVER_PATTERNS):
        return NEVER
    last = _last_exception_line(exc_string)
    if "JobTimeoutException" in last or "TaskTimeoutError" in last:
        return PERMANENT  # a hard time limit is not retried
    if any(name in last for name in _TRANSIENT_NAMES) or "AbandonedJobError" in exc_string:
        return TRANSIENT
    return PERMANENT


def _last_exception_line(exc_string: str) -> str:
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line.strip()):
            return line.strip()
    return lines[-1] if lines else ""


def sweep_failed_jobs(conn: redis.Redis, default: RetryPolicy | None, settings: Settings) -> int:
    """One pass over the failed registries: retry what is due, dead-letter what is done. Returns moves."""
    default = default or RetryPolicy()
    moved = 0
    for queue in queues.queues(conn):
        registry = FailedJobRegistry(queue=queue)
        for job_id in registry.get_job_ids():
            try:
                job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            except Exception:
                registry.remove(job_id)
                continue
            moved += _handle(conn, registry, job, default, settings)
    return moved


def _handle(
    conn: redis.Redis, registry: FailedJobRegistry, job: Job, default: RetryPolicy, settings: Settings
) -> int:
    state = as_text_map(conn.hgetall(keys.job_retry(job.id)))
    failure_id = _failure_id(job)
    if state.get("failure_id") != failure_id:  # a new failure: the first, or one after a retry
        policy = POLICIES.get(job.func_name or "", default)
        state = _record_failure(conn, job, failure_id, policy)
    if state["decision"] == "dead":
        _bury(conn, registry, job, state, settings)
        return 1
    if float(state["next_retry_ts"]) <= datetime.now(UTC).timestamp():
        # A job whose worker died was running: it goes back to the front of its queue, so that in a
        # busy refresh it resumes at once instead of after every province still queued.
        registry.requeue(job, at_front=state.get("exception") == failures.ABANDONED)
        with conn.pipeline() as pipe:
            pipe.hset(keys.job_retry(job.id), "decision", "requeued")
            pipe.hincrby(keys.METRIC_COUNTERS, counters.name(counters.RETRIES, _counted_kind(job)), 1)
            pipe.execute()
        _mark_refresh_retrying(conn, job, state, requeued=True)
        log.info("retry: requeued %s (attempt %s)", job.id, state["attempt"])
        return 1
    return 0


def _how_it_failed(conn: redis.Redis, job: Job) -> dict[str, str]:
    """The failure's record (jobs.failures), or for one nobody recorded, what RQ's text of it says."""
    recorded = failures.take(conn, job.id)
    if recorded is not None:
        return recorded
    text = _exc_string(job)
    exception = failures.ABANDONED if "AbandonedJobError" in text else ""
    return {"kind": classify(text), "error": _last_exception_line(text), "exception": exception}


def _record_failure(conn: redis.Redis, job: Job, failure_id: str, policy: RetryPolicy) -> dict[str, str]:
    failure = _how_it_failed(conn, job)
    attempt = int(conn.hget(keys.job_retry(job.id), "attempt") or 0) + 1
    if job.func_name in RUN_FUNCS:  # RQ's Retry may have run it several times: the run counts each execution
        attempt = max(attempt, int(job.meta.get("attempt") or 0))
    retry = failure["kind"] == TRANSIENT and policy.allows(attempt)
    next_ts = datetime.now(UTC).timestamp() + policy.delay(attempt) if retry else 0.0
    state = {
        "failure_id": failure_id, "kind": failure["kind"], "attempt": str(attempt),
        "max_retries": str(policy.max_retries), "decision": "retry" if retry else "dead",
        "next_retry_ts": repr(next_ts), "last_error": failure["error"][:500], "exception": failure.get("exception", ""),
    }
    conn.hset(keys.job_retry(job.id), mapping=state)  # type: ignore[arg-type]
    conn.expire(keys.job_retry(job.id), STATE_TTL)
    if retry:
        _mark_refresh_retrying(conn, job, state, requeued=False)
    return state


def _failure_id(job: Job) -> str:
    """Identifies one failure of a job (RQ stores a result per execution)."""
    result = job.latest_result()
    if result is not None:
        return str(result.id)
    return str(job.ended_at or job.enqueued_at)


def _exc_string(job: Job) -> str:
    result = job.latest_result()
    text = getattr(result, "exc_string", None) if result is not None else None
    return str(text or job.exc_info or "unknown failure")


def _mark_refresh_retrying(conn: redis.Redis, job: Job, state: dict[str, str], requeued: bool) -> None:
    task_id = _refresh_of(job)
    if task_id is None:
        return
    next_at = datetime.fromtimestamp(float(state["next_retry_ts"]), UTC).isoformat(timespec="seconds")
    # `attempt` is the attempt this retry makes (waiting, then running), of `max_attempts`: the state counts
    # the attempts that failed, and the error message of the last says "after N attempt(s)" of the same N.
    failed, max_retries = int(state["attempt"]), int(state["max_retries"])
    retry = {"attempt": failed + 1, "max_attempts": max_retries + 1, "max_retries": max_retries,
             "next_retry_at": None if requeued else next_at, "last_error": state["last_error"], "job_id": job.id}
    conn.hset(keys.task(task_id), "retry", json.dumps(retry, ensure_ascii=False))
    if not requeued and _waits_alone(conn, job, task_id):
        # The whole task waits for its retry: what the reference design shows as FAILED -> PENDING.
        step = f"等待重试（第 {state['attempt']} 次）"
        records.transition(conn, task_id, (RUNNING,), PENDING, {"current_step": step})


def _waits_alone(conn: redis.Redis, job: Job, task_id: str) -> bool:
    """True when the failed job is all the task is doing (its plan, or a one-province task) and none of the
    task's other jobs is queued or running: the plan hands provinces out as it walks them, and a province
    running while its task is PENDING would find the task ended when it publishes."""
    if job.func_name not in PLAN_FUNCS and conn.hget(keys.task(task_id), "kind") != b"province":
        return False
    others = [as_text(j) for j in conn.smembers(keys.task_jobs(task_id)) if as_text(j) != job.id]
    return not live_jobs(conn, others)


def _counted_kind(job: Job) -> str:
    """The label of a job in the retries and dead-letter counters: refresh, task (a named task) or other."""
    if job.func_name in REFRESH_FUNCS:
        return "refresh"
    return "task" if job.func_name in RUN_FUNCS else "other"


def _refresh_of(job: Job) -> str | None:
    if job.func_name in REFRESH_FUNCS and job.args:
        return str(job.args[0])
    return None


def _bury(
    conn: redis.Redis, registry: FailedJobRegistry, job: Job, state: dict[str, str], settings: Settings
) -> None:
    """Move a job out of RQ's failed registry into refreshq's dead-letter registry, and end its part."""
    entry = {
        "job_id": job.id, "queue": job.origin, "func": job.func_name or "", "task_id": _refresh_of(job) or "",
        "kind": state["kind"], "attempts": state["attempt"], "last_error": state["last_error"],
        "buried_at": records.now_iso(),
    }
    with conn.pipeline() as pipe:
        pipe.zadd(keys.DEAD_LETTER, {job.id: datetime.now(UTC).timestamp()})
        pipe.hset(keys.dead_letter_entry(job.id), mapping=entry)  # type: ignore[arg-type]
        pipe.hincrby(keys.METRIC_COUNTERS, counters.name(counters.DEAD_LETTERS, _counted_kind(job)), 1)
        pipe.execute()
    registry.remove(job)
    conn.hset(keys.job_retry(job.id), "decision", "buried")
    log.warning("retry: %s is dead after %s attempt(s): %s", job.id, state["attempt"], state["last_error"])
    _end_refresh_part(conn, job, state, settings)


def _end_refresh_part(conn: redis.Redis, job: Job, state: dict[str, str], settings: Settings) -> None:
    task_id = _refresh_of(job)
    if task_id is None:
        return
    message = f"{state['last_error']} (after {state['attempt']} attempt(s))"
    if job.func_name in PROVINCE_FUNCS:
        end_province(conn, task_id, str(job.args[1]), f"failed: {message}", settings)
    else:
        records.transition(conn, task_id, ACTIVE, FAILED,
                           {"finished_at": records.now_iso(), "error_message": message[:2000]})
