"""Fetching and staging the leaves of one province: concurrent, checkpointed, cancellable.

Each leaf is staged in an atomic script together with its checkpoint entry and counters (see
published.stage_leaves; several leaves may share one call, each in or out by itself), so a crash leaves
every leaf either fully in (and skipped by the next run) or not at all, and an id another leaf of the
task already staged is kept once and reported.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis
from rq.job import Job

from jobs import keys, shutdown
from jobs.errors import PermanentUpstreamError, StagingLostError, StaleExecutionError
from jobs.redis_values import as_texts
from jobs.refresh import published, records
from jobs.refresh.fence import Fence, guarded, unfenced
from jobs.refresh.progress import ProgressReporter
from jobs.refresh.published import Leaf
from jobs.scripts import Scripts
from jobs.upstream.base import Hospital, Region, TotalMismatch, Upstream, total_mismatch

log = logging.getLogger("refreshq.refresh")

# How often the cancel flag is read while leaves are in flight: bounds the time to stop.
CANCEL_POLL_SECONDS = 0.25

_LEVEL_RANK = {"province": 0, "city": 1}
_STEP = {"district": "正在处理区县数据：{}", "city": "正在处理城市数据：{}", "province": "正在处理省份数据：{}"}


# Runs of the leaves a province job makes when staged ones go missing again (see LeafRunner.run).
RERUNS = 3
# A call stages what the fetching threads have handed over, up to this much (one atomic script).
BATCH_LEAVES = 16
BATCH_RECORDS = 2000
# How long a call waits for more arrivals after its first: a call's counters cost the same for one leaf
# as for sixteen, and with the server quick to answer, calls had come to hold 1.3 leaves each (measured:
# 11.2 Redis commands a leaf, 7.8 with the wait; no change in the refresh's time).
GATHER_SECONDS = 0.004


class Cancelled(Exception):
    """Raised inside a leaf fetch when the task was cancelled; the leaf is not staged."""


@dataclass(frozen=True)
class Fetched:
    """What one fetching thread hands to the stager for its leaf: its records, or nothing to stage."""

    leaf: Leaf
    hospitals: list[Hospital] | None  # None: refused (recorded already), cancelled, or failed
    error: BaseException | None = None
    mismatch: TotalMismatch | None = None  # the stale `total` its listing was taken with


class LeafRunner:
    """Runs the unfinished leaves of one province of one task.

    `concurrency` threads fetch leaves; the thread calling `run` stages them, several per script call,
    as they arrive. Threads that would only wait on Redis round trips (and each open a connection of
    their own) are left out: one stager, one connection, a GIL hand-off per batch instead of per leaf.
    """

    def __init__(
        self, conn: redis.Redis, task_id: str, kind: str, province: Region, upstream: Upstream, job: Job | None,
        fence: Fence | None = None,
    ) -> None:
        self.conn = conn
        self.task_id = task_id
        self.province = province
        self.upstream = upstream
        # Every write is made while this execution owns the province (a paused one that woke writes nothing).
        self.fence = fence or unfenced(task_id)
        self.reporter = ProgressReporter(conn, task_id, kind, job, self.fence)
        self.failed_leaves = 0
        self._refused_codes: set[str] = set()
        self._scripts = Scripts(conn)
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    def run(self, leaves: list[Leaf], concurrency: int) -> str:
        """"done", "cancelled" or "interrupted" (warm shutdown).

        A transient failure of a leaf is re-raised once the other leaves are staged.
        """
        for _ in range(RERUNS):
            outcome = self._run_once(leaves, concurrency)
            missing = self._unstaged(leaves) if outcome == "done" else []
            if not missing:
                return outcome
            # A server that acknowledged writes and lost them (killed before its append-only file had them,
            # as appendfsync everysec allows) lost those leaves' checkpoint entries with their data: the
            # checkpoint still tells the truth, so fetch them again rather than publish without them.
            log.warning("refresh %s: %d staged leaf/leaves of %s are no longer in the checkpoint; fetching "
                        "them again", self.task_id, len(missing), self.province["code"])
        raise StagingLostError(f"leaves of {self.province['code']} keep going missing from the checkpoint")

    def _unstaged(self, leaves: list[Leaf]) -> list[Leaf]:
        done = set(as_texts(self.conn.smembers(keys.checkpoint_leaves(self.task_id, self.province["code"]))))
        return [leaf for leaf in leaves if leaf.code not in done and leaf.code not in self._refused_codes]

    def _run_once(self, leaves: list[Leaf], concurrency: int) -> str:
        # Cities and provinces without districts first: they tend to hold the most hospitals (the most
        # pages), and a big leaf started last keeps the job waiting on it with its other threads idle.
        todo = sorted(self._unstaged(leaves), key=lambda leaf: _LEVEL_RANK.get(leaf.level, 2))
        if not todo:
            return "done"
        # Bounded: fetching threads wait while the stager is behind, so a horse holds a few leaves at most.
        fetched: queue.Queue[Fetched] = queue.Queue(maxsize=max(1, concurrency))
        pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo))), thread_name_prefix="leaf")
        for leaf in todo:
            pool.submit(self._fetch_leaf, leaf, fetched)
        outcome, error = "cancelled", None
        try:
            outcome, error = self._stage_arrivals(fetched, len(todo))
        finally:
            if outcome != "done":
                self._cancel.set()  # fetches still in flight are abandoned, never staged
            # Leaves still in flight after a cancel are abandoned, never staged.
            pool.shutdown(wait=not self._cancel.is_set(), cancel_futures=True)
            self.reporter.flush()
        if error is not None and outcome == "done":
            raise error
        return outcome

    def _stage_arrivals(self, fetched: queue.Queue[Fetched], expected: int) -> tuple[str, BaseException | None]:
        """Stage fetched leaves until every one has arrived; the outcome and the first fetch error."""
        error: BaseException | None = None
        checked = time.monotonic()
        while expected:
            batch = _take_batch(fetched)
            expected -= len(batch)
            error = error or next((f.error for f in batch if f.error is not None), None)
            if isinstance(error, StaleExecutionError):
                raise error  # this execution owns the province no longer: it stops at once
            self._stage([f for f in batch if f.hospitals is not None])
            now = time.monotonic()
            if now - checked >= CANCEL_POLL_SECONDS or not expected:
                checked = now
                if self.conn.exists(keys.task_cancel(self.task_id)):
                    return "cancelled", None
                if shutdown.requested.is_set():
                    return "interrupted", None
        return "done", error

    def _fetch_leaf(self, leaf: Leaf, fetched: queue.Queue[Fetched]) -> None:
        try:
            hospitals, mismatch = self._fetch(leaf)
            arrival = Fetched(leaf, hospitals, mismatch=mismatch)
        except PermanentUpstreamError as exc:
            try:
                self._refused(leaf, str(exc))
                arrival = Fetched(leaf, None)
            except StaleExecutionError as stale:
                arrival = Fetched(leaf, None, stale)
        except Cancelled:
            return  # the stager has stopped waiting
        except BaseException as exc:  # handed over, re-raised by `run` once the others are staged
            arrival = Fetched(leaf, None, exc)
        while not self._cancel.is_set():
            try:
                fetched.put(arrival, timeout=CANCEL_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _fetch(self, leaf: Leaf) -> tuple[list[Hospital], TotalMismatch | None]:
        if self._cancel.is_set():
            raise Cancelled()
        region: Region = {"code": leaf.code, "name": leaf.name, "level": leaf.level}
        # The client returns a leaf whole or not at all; one abandoned by a cancel is not staged.
        # (A cancel that lands mid-leaf stops its paging too: the job closes the client.)
        hospitals = self.upstream.hospitals(region)
        mismatch = total_mismatch(self.upstream, region)
        if self._cancel.is_set():
            raise Cancelled()
        return hospitals, mismatch

    def _stage(self, batch: list[Fetched]) -> None:
        if not batch:
            return
        code = self.province["code"]
        batch_leaves = [(f.leaf, f.hospitals or []) for f in batch]
        mismatches = {f.leaf.code: f.mismatch for f in batch if f.mismatch is not None}
        staged = published.stage_leaves(self._scripts, code, self.task_id, batch_leaves, self.fence, mismatches)
        for arrival, outcome in zip(batch, staged, strict=True):
            if outcome is not None and outcome.conflicts:
                log.warning("refresh %s: %d hospital id(s) of leaf %s were staged under another leaf already; "
                            "kept once", self.task_id, outcome.conflicts, arrival.leaf.code)
            if outcome is not None and arrival.mismatch is not None:
                log.warning("refresh %s: leaf %s taken with a stale total: the upstream said %d, its listing (the "
                            "same twice) held %d", self.task_id, arrival.leaf.code, arrival.mismatch.total,
                            arrival.mismatch.listed)
        last = batch[-1].leaf
        self.reporter.report(_STEP.get(last.level, "正在处理：{}").format(last.name))

    def _refused(self, leaf: Leaf, error: str) -> None:
        with self._lock:
            self.failed_leaves += 1
            self._refused_codes.add(leaf.code)
        region: Region = {"code": leaf.code, "name": leaf.name, "level": leaf.level}
        guarded(self.conn, self.fence, "region", lambda pipe: records.failed_region(
            pipe, self.task_id, region, error, province=self.province["code"]))


def _take_batch(fetched: queue.Queue[Fetched]) -> list[Fetched]:
    """The next arrival (waiting at most CANCEL_POLL_SECONDS for it), and whatever else arrives within
    GATHER_SECONDS of it, up to a batch's bounds; empty when nothing came."""
    try:
        batch = [fetched.get(timeout=CANCEL_POLL_SECONDS)]
    except queue.Empty:
        return []
    records = len(batch[0].hospitals or ())
    gather_until = time.monotonic() + GATHER_SECONDS
    while len(batch) < BATCH_LEAVES and records < BATCH_RECORDS:
        try:
            batch.append(fetched.get(timeout=max(0.0, gather_until - time.monotonic())))
        except queue.Empty:
            break
        records += len(batch[-1].hospitals or ())
    return batch
