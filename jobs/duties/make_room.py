"""Scheduler duty: a refresh job resumed after its worker died goes ahead of the jobs that took its place.

A worker that dies (kill -9, OOM, a lost machine) is noticed when its job's heartbeat lapses, 10-15 s later
(jobs.duties.abandoned), and the job goes back to the front of its queue (jobs.duties.retries). Meanwhile the
workers that were free -- the dead one's replacement first of all -- took the next jobs of the queue, so the
resumed job would wait for one of them to end: a whole province, minutes with a slow upstream. So once it
has waited at the front of the refresh queue for STEP_BACK_AFTER with no live worker of that queue free, the
youngest province job that started after the resumed one's last heartbeat is asked to step back (STEP_BACK,
over RQ's worker command channel): its worker stops it at its next safe point as for a deploy (checkpoint
kept), and it goes back into the queue right behind the resumed job (keys.step_back says which), which that
worker then takes. Jobs that
were already running when the worker died keep running: they did not take its place.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime

import redis
from rq import worker_registration
from rq.command import send_command
from rq.job import Job
from rq.utils import utcparse

from jobs import failures, keys, queues
from jobs.duties.whereabouts import beats
from jobs.redis_values import as_text, as_texts

log = logging.getLogger("refreshq.make_room")

STEP_BACK = "refreshq-step-back"  # payload: job_id, the job to stop (keys.step_back: the job it goes behind)
# How long a resumed job waits at the front of the queue for a free worker before one is made free.
STEP_BACK_AFTER = 1.0
# A step back asked for that did not happen (the job ended meanwhile, an older worker) is asked again after this.
ASK_AGAIN_AFTER = 30.0
FRONT = 5  # jobs at the front of the queue looked at
# A job requeued this long after its last heartbeat was gone meanwhile (a lost worker is noticed 10-15 s after
# its last beat); one a deploy or a step back requeued is back within a second.
ABANDONED_GAP = 5.0


class MakeRoom:
    """The duty; it remembers the jobs it asked about (resumed ones, and those asked to step back) so as to ask
    once."""

    __name__ = "make_room"

    def __init__(self) -> None:
        self._asked: dict[str, float] = {}

    def __call__(self, conn: redis.Redis) -> None:
        try:
            self._look(conn)
        except redis.RedisError:
            raise  # the scheduler logs it and ticks on
        except Exception:  # a record this look cannot read must not stop the scheduler and its other duties
            log.exception("make room: the look failed; the next tick tries again")

    def _look(self, conn: redis.Redis) -> None:
        now = time.monotonic()
        self._asked = {k: t for k, t in self._asked.items() if now - t < ASK_AGAIN_AFTER}
        waiting = [w for w in _resumed_at_front(conn) if w[0] not in self._asked]
        if not waiting:
            return
        running = _busy_workers(conn)
        if running is None:
            return  # a worker of the queue is free: it takes the resumed job at once
        for job_id, last_beat in waiting:
            took_its_place = [r for r in running if r[2] > last_beat and r[1] not in self._asked]
            if not took_its_place:
                continue
            worker, youngest, _started = max(took_its_place, key=lambda r: r[2])
            conn.set(keys.step_back(youngest), job_id, ex=int(ASK_AGAIN_AFTER))  # read by its work-horse
            send_command(conn, worker, STEP_BACK, job_id=youngest)
            self._asked[job_id] = self._asked[youngest] = now
            log.info("make room: %s, resumed after its worker died, waits at the front of the queue; asked %s "
                     "(on %s, started after that) to step back behind it", job_id, youngest, worker)


def _resumed_at_front(conn: redis.Redis) -> list[tuple[str, datetime]]:
    """Province jobs at the front of the refresh queue that were declared abandoned and requeued (their
    latest failure, jobs.duties.retries) well after their last heartbeat, and have waited there for
    STEP_BACK_AFTER: (job id, last heartbeat). A job requeued by a deploy or a step back is not one."""
    front = [j for j in as_texts(conn.lrange(queues.queue(conn, queues.REFRESH).key, 0, FRONT - 1)) if _province(j)]
    if not front:
        return []
    with conn.pipeline(transaction=False) as pipe:
        for job_id in front:
            pipe.hmget(Job.key_for(job_id), "last_heartbeat", "enqueued_at")
            pipe.hget(keys.job_retry(job_id), "exception")
        rows = pipe.execute()
    found = []
    now = datetime.now(UTC)
    for job_id, (beat, enqueued), exception in zip(front, rows[::2], rows[1::2], strict=True):
        if not (beat and enqueued and as_text(exception or b"") == failures.ABANDONED):
            continue
        last_beat, requeued = utcparse(as_text(beat)), utcparse(as_text(enqueued))
        gone = (requeued - last_beat).total_seconds()
        if gone >= ABANDONED_GAP and (now - requeued).total_seconds() >= STEP_BACK_AFTER:
            found.append((job_id, last_beat))
    return found


def _busy_workers(conn: redis.Redis) -> list[tuple[str, str, datetime]] | None:
    """(worker, province job, its start) of every live worker of the refresh queue, or None if one is free."""
    names = [as_text(k).removeprefix("rq:worker:") for k in worker_registration.get_keys(
        queue=queues.queue(conn, queues.REFRESH), connection=conn)]
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(f"rq:worker:{name}", "state", "current_job", "last_heartbeat")
        rows = pipe.execute()
    live = [(name, as_text(state or b""), as_text(job or b""))
            for name, (state, job, beat) in zip(names, rows, strict=True) if beats(beat)]
    if any(state != "busy" for _name, state, _job in live):
        return None
    jobs = [(name, job) for name, _state, job in live if _province(job)]
    with conn.pipeline(transaction=False) as pipe:
        for _name, job in jobs:
            pipe.hget(Job.key_for(job), "started_at")
        started = pipe.execute()
    return [(name, job, utcparse(as_text(at))) for (name, job), at in zip(jobs, started, strict=True) if at]


def _province(job_id: str) -> bool:
    """A province job (`<task>-p<code>-<attempt>`, jobs.refresh.job.province_job_id), not a plan job."""
    return re.fullmatch(r".+-p[^-]+-\d+", job_id) is not None
