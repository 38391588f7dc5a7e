"""The one status vocabulary: refresh tasks, named-task runs (history), chains and batches, schedules' runs.

Words for what is shown to people (status dicts, `tasks history`, `schedule list`, workflow records); RQ's
own job statuses are lower-case and read through `from_rq`. `LIVE` is the one answer to "may this RQ job
still run?" (queued, running, waiting for a dependency or for a retry, or created and about to be queued).
"""

from __future__ import annotations

from rq.job import JobStatus

PENDING = "PENDING"        # not started: waiting for a worker, a running slot or its turn
QUEUED = "QUEUED"          # a schedule's last run, still in its queue
WAITING = "WAITING"        # a chain step or batch callback waiting for the jobs it depends on
RUNNING = "RUNNING"
RETRYING = "RETRYING"      # failed, and waiting for its next attempt
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
UNKNOWN = "UNKNOWN"        # its RQ job expired or never existed

TASK_STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)  # a refresh task's
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (PENDING, RUNNING)
ENDED = (*TERMINAL, UNKNOWN)

LIVE = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED})

_FROM_RQ = {
    JobStatus.QUEUED: PENDING, JobStatus.CREATED: PENDING, JobStatus.DEFERRED: WAITING,
    JobStatus.STARTED: RUNNING, JobStatus.SCHEDULED: RETRYING, JobStatus.FINISHED: SUCCEEDED,
    JobStatus.FAILED: FAILED, JobStatus.STOPPED: FAILED, JobStatus.CANCELED: CANCELLED,
}


def is_live(status: JobStatus | str | bytes | None) -> bool:
    """True while an RQ job in this status may still run (see LIVE)."""
    return _rq(status) in LIVE


def from_rq(status: JobStatus | str | bytes | None) -> str:
    """The word for an RQ job status (UNKNOWN for none or one RQ does not have)."""
    rq_status = _rq(status)
    return _FROM_RQ.get(rq_status, UNKNOWN) if rq_status is not None else UNKNOWN


def _rq(status: JobStatus | str | bytes | None) -> JobStatus | None:
    if status is None or isinstance(status, JobStatus):
        return status
    text = status.decode() if isinstance(status, bytes) else status
    try:
        return JobStatus(text)
    except ValueError:
        return None
