"""Scheduler duty: the reconciler. Work whose job is gone is taken up again, once, and says so.

Everything else the scheduler does starts from a job it can see (in a started registry, a failed registry,
a claims list). A job that vanishes without passing through any of them -- deleted from its queue
(rq-dashboard's Delete), lost with a failover, taken out of a registry half-way -- leaves its refresh task
RUNNING forever, or its named run RUNNING in its history. Every RECONCILE_SECONDS the active scheduler looks
at every RUNNING or PENDING refresh task (jobs.duties.lost_refreshes) and at the named runs it can find
(jobs.duties.lost_runs) for work that nothing will run, and takes it up: a refresh's lost province or plan
is enqueued again (it resumes from the checkpoint), a task whose provinces all ended is finished, a named
run that vanished is ended FAILED.

A loss must be seen on every pass for CONFIRM_SECONDS before anything is done: some gaps are legitimate and
brief (a job between two registries, a plan job about to enqueue). And it is checked once more in the
transaction that enqueues (WATCH), so a refresh that is merely busy never gets a second job. Each take-up
is logged, counted (`refreshq_reconciled_total{kind}`) and, for a refresh, recorded in its status dict
(`recovered`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import lost_refreshes, lost_runs, whereabouts
from jobs.duties.lost_refreshes import Loss
from jobs.duties.lost_runs import LostRun
from jobs.observe import counters
from jobs.refresh import records

log = logging.getLogger("refreshq.reconcile")

# Between two passes; a loss is taken up once it has been seen on every pass for CONFIRM_SECONDS, so
# within RECONCILE_SECONDS + CONFIRM_SECONDS + a pass of happening.
RECONCILE_SECONDS = 3.0
CONFIRM_SECONDS = 6.0

Suspect = tuple[float, str]  # when a loss was first seen (monotonic), and the same as ISO time


class Reconciler:
    """The duty: one pass every `interval` seconds, keeping what each pass saw for the next ones."""

    __name__ = "reconcile"

    def __init__(self, settings: Settings, interval: float = RECONCILE_SECONDS,
                 confirm: float = CONFIRM_SECONDS) -> None:
        self.settings = settings
        self.interval, self.confirm = interval, confirm
        self._due = 0.0
        self._suspects: dict[tuple[str, str, str], Suspect] = {}

    def __call__(self, conn: redis.Redis) -> None:
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.interval
        try:
            self._pass(conn, now)
        except redis.RedisError:
            raise  # the scheduler logs it and ticks on
        except Exception:  # a record this pass cannot read must not stop the scheduler and its other duties
            log.exception("reconcile: the pass failed; the next one tries again")

    def _pass(self, conn: redis.Redis, now: float) -> None:
        suspects: dict[tuple[str, str, str], Suspect] = {}
        for loss in self._losses(conn):
            first = self._suspects.get(loss.key, (now, records.now_iso()))
            if now - first[0] < self.confirm or not self._take_up(conn, loss, first[1]):
                suspects[loss.key] = first
        self._suspects = suspects

    def _losses(self, conn: redis.Redis) -> list[Loss | LostRun]:
        snapshot = whereabouts.read_snapshot(conn, queues.ALL_QUEUES)
        found: list[Loss | LostRun] = []
        for task_id in lost_refreshes.active_refreshes(conn):
            try:
                found += lost_refreshes.refresh_losses(conn, task_id, snapshot)
            except (ValueError, KeyError, TypeError) as exc:  # a damaged record must not stop the others
                log.warning("reconcile: cannot read refresh %s (%s: %s)", task_id, type(exc).__name__, exc)
        return [*found, *lost_runs.run_losses(conn, snapshot)]

    def _take_up(self, conn: redis.Redis, loss: Loss | LostRun, lost_since: str) -> bool:
        if isinstance(loss, LostRun):
            return self._take_up_run(conn, loss)
        event: dict[str, Any] = {"at": records.now_iso(), "kind": loss.kind, "attempt": int(loss.attempt),
                                 "lost_since": lost_since, "why": loss.why}
        if loss.province is not None:
            event["province"] = loss.province["code"]
        job_id = lost_refreshes.take_up(conn, loss, self.settings, event, counted(loss.kind))
        if job_id is None:
            return False
        what = {"plan": "its plan", "finish": "its end"}.get(loss.kind) or f"province {event.get('province')}"
        done = "finished it" if loss.kind == lost_refreshes.FINISH else f"re-enqueued it as {job_id}"
        log.warning("reconcile: refresh %s: nothing would run %s since %s (%s); %s", loss.task_id, what,
                    lost_since, loss.why, done)
        return True

    def _take_up_run(self, conn: redis.Redis, run: LostRun) -> bool:
        done = lost_runs.take_up(conn, run)
        if done is None:
            return False
        conn.hincrby(keys.METRIC_COUNTERS, counted(run.kind), 1)
        where = f" (schedule {run.schedule})" if run.schedule else ""
        log.warning("reconcile: run %s of task %s%s: %s; %s", run.job_id, run.task or "?", where, run.why, done)
        return True


def counted(kind: str) -> str:
    """The counter field of one take-up: `reconciled|<kind>` (province, plan, finish, run)."""
    return counters.name(counters.RECONCILED, kind)
