"""Old dotted names of the named-task run functions (the previous layout), kept for jobs queued before an
upgrade: RQ stores a job's function and its callbacks by dotted name. New runs use `jobs.named.runs`."""

from jobs.named.runs import on_run_failure, run_named_task

__all__ = ["on_run_failure", "run_named_task"]
