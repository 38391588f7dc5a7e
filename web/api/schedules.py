"""/api/v1/schedules: list, add or replace (PUT), remove, pause, resume, run now."""

from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Response as BaseResponse

from jobs.duties import fire_schedules
from jobs.errors import ScheduleError, TaskArgumentsError, TaskStateError
from jobs.named import schedules
from jobs.named.catalog import TaskCatalog, configured_tasks
from jobs.named.triggers import DEFAULT_TIMEZONE
from web.api.blueprint import api
from web.api.bounds import takes
from web.api.context import as_json, body, conn, settings
from web.api.pagination import page_args, slice_of
from web.auth import requires

_FIELDS = ("cron", "interval", "args", "timezone", "max_instances", "misfire_grace_time", "coalesce")


def _catalog() -> TaskCatalog:
    return configured_tasks(settings())


@api.get("/schedules")
@requires("read")
@takes("page", "page_size")
def list_schedules() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    db = conn()
    return as_json(slice_of([schedules.describe(db, name) for name in schedules.names(db)], page, page_size))


@api.get("/schedules/<name>")
@requires("read")
@takes()
def get_schedule(name: str) -> BaseResponse:
    return as_json(schedules.describe(conn(), name))


def _typed(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(name, default)
    if value is not None and ((isinstance(value, bool) and kind is not bool) or not isinstance(value, kind)):
        raise ScheduleError(f"{name} must be {getattr(kind, '__name__', kind)}")
    return value


@api.put("/schedules/<name>")
@requires("admin")
@takes()
def put_schedule(name: str) -> BaseResponse:
    """Add or replace the schedule of task `name`; an empty body installs the task's default schedule."""
    catalog = _catalog()
    definition = catalog.get(name)
    data = body(_FIELDS)
    if data.get("cron") is None and data.get("interval") is None:
        if set(data) - {"cron", "interval"}:
            raise ScheduleError("give cron or interval with the other fields (an empty body: the default)")
        schedule = schedules.default_schedule(definition)
        if schedule is None:
            raise ScheduleError(f"task {name} has no default schedule: give cron or interval")
    else:
        args = data.get("args", [])
        if not isinstance(args, list | dict):
            raise TaskArgumentsError("args must be a JSON array (positional) or object (keyword arguments)")
        schedule = schedules.make_schedule(
            catalog, name, cron=_typed(data, "cron", str, None), interval=_typed(data, "interval", int, None),
            timezone=_typed(data, "timezone", str, DEFAULT_TIMEZONE),
            args=args if isinstance(args, list) else [], kwargs=args if isinstance(args, dict) else {},
            max_instances=_typed(data, "max_instances", int, 1),
            misfire_grace_time=_typed(data, "misfire_grace_time", int, 300),
            coalesce=_typed(data, "coalesce", bool, True),
        )
    schedules.save(conn(), schedule, definition, time.time())
    return as_json(schedules.describe(conn(), name))


@api.delete("/schedules/<name>")
@requires("admin")
@takes()
def delete_schedule(name: str) -> BaseResponse:
    schedules.remove(conn(), name)
    return BaseResponse(status=204)


@api.post("/schedules/<name>/pause", endpoint="pause_schedule")
@requires("admin")
@takes()
def pause(name: str) -> BaseResponse:
    schedules.set_paused(conn(), _catalog(), name, True, time.time())
    return as_json(schedules.describe(conn(), name))


@api.post("/schedules/<name>/resume", endpoint="resume_schedule")
@requires("admin")
@takes()
def resume(name: str) -> BaseResponse:
    schedules.set_paused(conn(), _catalog(), name, False, time.time())
    return as_json(schedules.describe(conn(), name))


@api.post("/schedules/<name>/run-now", endpoint="run_schedule_now")
@requires("admin")
@takes()
def run_now(name: str) -> BaseResponse:
    schedules.describe(conn(), name)  # 404 for no such schedule
    fired = fire_schedules.run_now(conn(), _catalog(), name)
    if not fired.job_ids:
        raise TaskStateError(f"{name}: {fired.note}")
    return as_json({"schedule": name, "run": fired.job_ids[0], "note": fired.note}, 201)
