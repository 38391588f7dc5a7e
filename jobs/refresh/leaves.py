"""Fetching and staging the leaves of one province: concurrent, checkpointed, cancellable.

Each leaf is staged in one atomic script together with its checkpoint entry and counters (see
published.stage_leaf), so a crash leaves every leaf either fully in (and skipped by the next run) or
not at all, and an id another leaf of the task already staged is kept once and reported.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import redis
from rq.job import Job

from jobs import keys, shutdown
from jobs.errors import PermanentUpstreamError
from jobs.redis_values import as_texts
from jobs.refresh import published, records
from jobs.refresh.progress import ProgressReporter
from jobs.refresh.published import Leaf
from jobs.scripts import Scripts
from jobs.upstream.base import Hospital, Region, Upstream

log = logging.getLogger("refreshq.refresh")

# How often the cancel flag is read while leaves are in flight: bounds the time to stop.
CANCEL_POLL_SECONDS = 0.25

_STEP = {"district": "正在处理区县数据：{}", "city": "正在处理城市数据：{}", "province": "正在处理省份数据：{}"}


class Cancelled(Exception):
    """Raised inside a leaf fetch when the task was cancelled; the leaf is not staged."""


class LeafRunner:
    """Runs the unfinished leaves of one province of one task."""

    def __init__(
        self, conn: redis.Redis, task_id: str, kind: str, province: Region, upstream: Upstream, job: Job | None
    ) -> None:
        self.conn = conn
        self.task_id = task_id
        self.province = province
        self.upstream = upstream
        self.reporter = ProgressReporter(conn, task_id, kind, job)
        self.failed_leaves = 0
        self._scripts = Scripts(conn)
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    def run(self, leaves: list[Leaf], concurrency: int) -> str:
        """"done", "cancelled" or "interrupted" (warm shutdown).

        A transient failure of a leaf is re-raised once the other leaves are staged.
        """
        done = set(as_texts(self.conn.smembers(keys.checkpoint_leaves(self.task_id, self.province["code"]))))
        todo = [leaf for leaf in leaves if leaf.code not in done]
        if not todo:
            return "done"
        pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo))), thread_name_prefix="leaf")
        pending: set[Future[None]] = {pool.submit(self._run_leaf, leaf) for leaf in todo}
        error: BaseException | None = None
        try:
            while pending:
                finished, pending = wait(pending, timeout=CANCEL_POLL_SECONDS, return_when=FIRST_COMPLETED)
                error = error or next((f.exception() for f in finished if f.exception() is not None), None)
                if self.conn.exists(keys.task_cancel(self.task_id)):
                    self._cancel.set()
                    return "cancelled"
                if shutdown.requested.is_set():
                    self._cancel.set()
                    return "interrupted"
        finally:
            # Leaves still in flight after a cancel are abandoned, never staged.
            pool.shutdown(wait=not self._cancel.is_set(), cancel_futures=True)
            self.reporter.flush()
        if error is not None and not isinstance(error, Cancelled):
            raise error
        return "done"

    def _run_leaf(self, leaf: Leaf) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        region: Region = {"code": leaf.code, "name": leaf.name, "level": leaf.level}
        try:
            hospitals = self._fetch(region)
        except PermanentUpstreamError as exc:
            self._refused(leaf, str(exc))
            return
        self._stage(leaf, hospitals)
        self.reporter.report(_STEP.get(leaf.level, "正在处理：{}").format(leaf.name))

    def _fetch(self, region: Region) -> list[Hospital]:
        # The client returns a leaf whole or not at all; one abandoned by a cancel is not staged.
        # (A cancel that lands mid-leaf stops its paging too: the job closes the client.)
        hospitals = self.upstream.hospitals(region)
        if self._cancel.is_set():
            raise Cancelled()
        return hospitals

    def _stage(self, leaf: Leaf, hospitals: list[Hospital]) -> None:
        staged = published.stage_leaf(self._scripts, self.province["code"], self.task_id, leaf, hospitals)
        if staged is not None and staged.conflicts:
            log.warning("refresh %s: %d hospital id(s) of leaf %s were staged under another leaf already; "
                        "kept once", self.task_id, staged.conflicts, leaf.code)

    def _refused(self, leaf: Leaf, error: str) -> None:
        with self._lock:
            self.failed_leaves += 1
        region: Region = {"code": leaf.code, "name": leaf.name, "level": leaf.level}
        records.failed_region(self.conn, self.task_id, region, error, province=self.province["code"])
