"""Named tasks: plain functions registered with `@task`, run on RQ workers, chained, batched and scheduled.

What a task module needs is here: `task`, `Priority`, `ScheduleSpec`, `current_run`, `chain`, `batch`.
"""

from jobs.named.definitions import Priority, ScheduleSpec
from jobs.named.runs import current_run
from jobs.named.task import task
from jobs.named.workflows import batch, chain

__all__ = ["Priority", "ScheduleSpec", "batch", "chain", "current_run", "task"]
