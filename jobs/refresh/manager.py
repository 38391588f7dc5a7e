"""RefreshManager: create, watch, cancel, resume, list and clean up refreshes.

`SyncRefreshManager` does the work; `RefreshManager` is its asyncio twin with the reference design's
async methods (each runs the synchronous call in a thread, so both share one implementation).

`TaskManager` and `SyncTaskManager` are aliases of the two (the same classes): the reference design names
them, and its method names (`create_full_refresh_task`, `get_task_status`, ...) are kept as they are.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, owners
from jobs.config import Settings
from jobs.connection import connect
from jobs.context import process_settings
from jobs.errors import RefreshNotFoundError, TaskCreationError, TaskStateError, TaskTimeoutError, ValidationError
from jobs.owners import Owner
from jobs.redis_values import as_texts
from jobs.refresh import published, records
from jobs.refresh.finish import BY_USER, end_province
from jobs.refresh.idempotency import Created, Request
from jobs.refresh.job import PLAN_FUNCS, enqueue_plan
from jobs.refresh.provinces import resolve_province, upstream_provinces
from jobs.statuses import ACTIVE, CANCELLED, FAILED, PENDING, RUNNING, TERMINAL
from jobs.upstream import secret_free_spec, spec_from_settings
from jobs.upstream.base import Region
from jobs.upstream.identity import check_workers

FULL_LABEL = "全量刷新"


class SyncRefreshManager:
    """The synchronous API, for scripts and the CLI."""

    def __init__(
        self,
        settings: Settings | None = None,
        conn: redis.Redis | None = None,
        upstream: dict[str, Any] | None = None,
    ) -> None:
        # The library's default: read from the environment now (jobs.context).
        self.settings = settings if settings is not None else process_settings()
        self.conn = conn if conn is not None else connect(self.settings)
        # What new tasks talk to: a secret-free spec stored with each task.
        self.upstream = (
            secret_free_spec(upstream, self.settings) if upstream is not None else spec_from_settings(self.settings)
        )

    def create_full_refresh_task(self, owner: Owner | None = None, idempotency_key: str | None = None) -> str:
        return self.create("full", None, owner, idempotency_key).task_id

    def create_province_refresh_task(
        self, province_name: str, owner: Owner | None = None, idempotency_key: str | None = None
    ) -> str:
        return self.create("province", province_name, owner, idempotency_key).task_id

    def create(
        self, kind: str, province_name: str | None = None, owner: Owner | None = None,
        idempotency_key: str | None = None,
    ) -> Created:
        """A new task for `owner` (the CLI's by default), within their limits; with an idempotency key a
        repeat of the same request returns the task the first one made (`replayed`)."""
        request = Request(kind, province_name, owner or Owner(), idempotency_key)
        if kind not in ("full", "province") or (kind == "province" and province_name is None):
            raise ValidationError(f"unknown kind {kind!r}: expected full, or province with a province name")
        # The same checks of the upstream for both kinds, before anything is stored: it is the one the
        # live workers fetch from, and it answers (its province list, cached briefly).
        check_workers(self.conn, self.upstream)
        if kind == "full":
            upstream_provinces(self.conn, self.settings, self.upstream)
            return self._create(request, FULL_LABEL, None)
        province = resolve_province(self.conn, self.settings, self.upstream, province_name or "")
        return self._create(request, province["name"], [province])

    def _create(self, request: Request, label: str, provinces: list[Region] | None) -> Created:
        task_id = records.new_refresh_id()
        record = records.new_record(task_id, request.kind, label, request.province, self.upstream,
                                    self.settings.limits.task_timeout, owner=request.owner.name)
        if provinces is not None:
            record["provinces"] = json.dumps(provinces, ensure_ascii=False)
        pending = keys.tasks_with_status(PENDING)
        # One transaction: the record, its indexes and the job exist together or not at all, and
        # only while fewer than REFRESHQ_MAX_PENDING tasks wait, the owner is within their limits and
        # the idempotency key is unused (WATCH makes every check exact).
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(pending, *owners.watched_keys(request.owner), *request.watched())  # type: ignore[no-untyped-call]
                    earlier = request.earlier_refresh(pipe)
                    if earlier is not None:
                        return Created(earlier, replayed=True)
                    self._check_room(pipe, request.owner)
                    pipe.multi()  # RQ joins this transaction instead of starting its own
                    records.add_record(pipe, record)
                    enqueue_plan(self.conn, task_id, self.settings, pipeline=pipe)
                    request.remember(pipe, task_id)
                    pipe.execute()
                    return Created(task_id, replayed=False)
                except redis.WatchError:
                    continue

    def _check_room(self, pipe: redis.client.Pipeline, owner: Owner) -> None:
        waiting = int(pipe.zcard(keys.tasks_with_status(PENDING)))
        if waiting >= self.settings.limits.max_pending:
            raise TaskCreationError(
                f"任务队列已满: {waiting} tasks are pending (REFRESHQ_MAX_PENDING="
                f"{self.settings.limits.max_pending}); try again when some have started"
            )
        owners.admit(self.conn, pipe, owner)

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        return records.status_dict(self.conn, task_id)

    def province_progress(self, task_id: str) -> list[dict[str, Any]]:
        """Per-province bars: name, leaves done/total, hospitals, and how the province ended."""
        raw = records.load_raw(self.conn, task_id)
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.task_stats(task_id))
            pipe.hgetall(keys.task_provinces_ended(task_id))
            stats, ended = pipe.execute()
        rows = []
        for province in json.loads(raw.get("provinces") or "[]"):
            code = province["code"]
            rows.append({
                "code": code,
                "name": province["name"],
                "leaves_total": int(stats.get(keys.province_stat(code, keys.PROVINCE_LEAVES_TOTAL).encode(), 0)),
                "leaves_done": int(stats.get(keys.province_stat(code, keys.PROVINCE_LEAVES_DONE).encode(), 0)),
                "hospitals": int(stats.get(keys.province_stat(code, keys.PROVINCE_HOSPITALS).encode(), 0)),
                "outcome": ended[code.encode()].decode() if code.encode() in ended else None,
            })
        return rows

    def wait_for_completion(self, task_id: str, timeout: float = 3600, poll_interval: float = 2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_task_status(task_id)
            if status["status"] in TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise TaskTimeoutError(f"refresh task {task_id} still {status['status']} after {timeout:g} s")
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def cancel_task(self, task_id: str) -> bool:
        """Stop a task: a queued one never starts, a running one stops at its next safe point."""
        status = records.load_raw(self.conn, task_id)["status"]
        if status in TERMINAL:
            return False
        self.conn.set(keys.task_cancel(task_id), BY_USER)
        # A pending task ends here; a running one ends when its last province job sees the flag.
        if records.transition(
            self.conn, task_id, (PENDING,), CANCELLED, {"finished_at": records.now_iso(), "current_step": "已取消"}
        ):
            self.conn.zrem(keys.TASKS_WAITING, task_id)
        self._cancel_queued_jobs(task_id)
        return True

    def _cancel_queued_jobs(self, task_id: str) -> None:
        job_ids = as_texts(self.conn.smembers(keys.task_jobs(task_id)))
        # One round trip for every job of the task, instead of two per job (a full refresh has 35).
        for job in Job.fetch_many(job_ids, connection=self.conn, serializer=JSONSerializer):
            if job is None or job.get_status(refresh=False) != JobStatus.QUEUED:
                continue
            try:
                job.cancel()
            except Exception:
                continue
            if job.func_name not in PLAN_FUNCS:
                end_province(self.conn, task_id, job.args[1], "cancelled", self.settings)

    def resume_task(self, task_id: str) -> str:
        """Continue a FAILED or CANCELLED task from its checkpoint; return the new job id."""
        record = records.load_raw(self.conn, task_id)
        if record["status"] not in (FAILED, CANCELLED):
            raise TaskStateError(f"refresh task {task_id} is {record['status']}: only FAILED or CANCELLED ones resume")
        check_workers(self.conn, json.loads(record.get("upstream") or "{}"))
        attempt = int(record.get("attempt", "1")) + 1
        ended_key = keys.task_provinces_ended(task_id)
        unfinished = [k for k, v in self.conn.hgetall(ended_key).items() if v != b"published"]
        if not records.transition(self.conn, task_id, (FAILED, CANCELLED), PENDING, {
            "attempt": str(attempt), "current_step": "等待继续执行", "error_message": "", "finished_at": "",
        }):
            raise TaskStateError(f"refresh task {task_id} changed status while resuming; try again")
        with self.conn.pipeline() as pipe:
            pipe.multi()
            pipe.delete(keys.task_cancel(task_id), keys.task_failed_regions(task_id))
            pipe.hset(keys.task(task_id), "retry", "")
            if unfinished:
                pipe.hdel(ended_key, *unfinished)
            job_id = enqueue_plan(self.conn, task_id, self.settings, f"-r{attempt}", pipeline=pipe)
            pipe.execute()
        return job_id

    def list_tasks(
        self, status: str | None = None, page: int = 1, page_size: int = 10,
        sort_by: str = "created_at", sort_order: str = "desc", kind: str | None = None, owner: str | None = None,
    ) -> dict[str, Any]:
        return records.list_page(self.conn, status, page, page_size, sort_by, sort_order, kind, owner)

    def get_active_tasks(self) -> list[dict[str, Any]]:
        return [records.status_dict(self.conn, t) for t in records.ids_with_status(self.conn, (RUNNING, PENDING))]

    def cleanup_old_tasks(self, older_than_days: float = 7, status_filter: list[str] | None = None) -> int:
        """Delete finished task records created before the cutoff, with their checkpoints and staging."""
        statuses = list(status_filter) if status_filter else list(TERMINAL)
        bad = [s for s in statuses if s not in TERMINAL]
        if bad:
            active = "running or pending" if set(bad) <= set(ACTIVE) else "unknown"
            raise ValidationError(f"cannot clean up {active} status {', '.join(bad)}: expected {', '.join(TERMINAL)}")
        if older_than_days < 0:
            raise ValidationError("older than must be >= 0 days")
        try:
            cutoff = (datetime.now(UTC) - timedelta(days=older_than_days)).timestamp()
        except (OverflowError, ValueError):
            raise ValidationError(f"older than {older_than_days:g} days is out of range") from None
        ids = records.ids_created_before(self.conn, cutoff, statuses)
        for task_id in ids:
            self._delete_refresh(task_id)
        return len(ids)

    def _delete_refresh(self, task_id: str) -> None:
        try:
            raw = records.load_raw(self.conn, task_id)
        except RefreshNotFoundError:
            raw = {}
        provinces = [p["code"] for p in json.loads(raw.get("provinces") or "[]")]
        for code in provinces:
            published.delete_staged(self.conn, code, task_id)
        with self.conn.pipeline() as pipe:
            pipe.unlink(
                keys.task(task_id), keys.task_stats(task_id), keys.task_cancel(task_id),
                keys.task_provinces_ended(task_id), keys.task_walked(task_id), keys.task_jobs(task_id),
                keys.task_failed_regions(task_id), keys.task_ids(task_id), keys.task_home_ids(task_id),
                keys.task_seen_ids(task_id),
                keys.task_conflicts(task_id), keys.task_total_mismatches(task_id),
                *(keys.checkpoint_leaves(task_id, c) for c in provinces),
                *(keys.province_plan(task_id, c) for c in provinces),
            )
            records.unindex(pipe, task_id, raw)
            pipe.execute()


class RefreshManager:
    """The asyncio API of the reference design; every call runs its synchronous twin in a thread."""

    def __init__(
        self, settings: Settings | None = None, conn: redis.Redis | None = None,
        upstream: dict[str, Any] | None = None,
    ) -> None:
        self.sync = SyncRefreshManager(settings, conn, upstream)

    async def create_full_refresh_task(self) -> str:
        return await asyncio.to_thread(self.sync.create_full_refresh_task)

    async def create_province_refresh_task(self, province_name: str) -> str:
        return await asyncio.to_thread(self.sync.create_province_refresh_task, province_name)

    async def get_task_status(self, task_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.get_task_status, task_id)

    async def wait_for_completion(
        self, task_id: str, timeout: float = 3600, poll_interval: float = 2
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.get_task_status(task_id)
            if status["status"] in TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise TaskTimeoutError(f"refresh task {task_id} still {status['status']} after {timeout:g} s")
            await asyncio.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    async def cancel_task(self, task_id: str) -> bool:
        return await asyncio.to_thread(self.sync.cancel_task, task_id)

    async def resume_task(self, task_id: str) -> str:
        return await asyncio.to_thread(self.sync.resume_task, task_id)

    async def list_tasks(
        self, status: str | None = None, page: int = 1, page_size: int = 10,
        sort_by: str = "created_at", sort_order: str = "desc",
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.list_tasks, status, page, page_size, sort_by, sort_order)

    async def get_active_tasks(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.get_active_tasks)

    async def cleanup_old_tasks(self, older_than_days: float = 7, status_filter: list[str] | None = None) -> int:
        return await asyncio.to_thread(self.sync.cleanup_old_tasks, older_than_days, status_filter)


# Aliases: the reference design's names of the two managers (the same classes; see the module's docstring).
TaskManager = RefreshManager
SyncTaskManager = SyncRefreshManager
