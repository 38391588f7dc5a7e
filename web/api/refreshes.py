"""/api/v1/refreshes: create, list, read, follow live, cancel, resume and clean up refresh tasks."""

from __future__ import annotations

import math
from typing import Any

from flask import current_app, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from jobs.errors import TaskStateError, ValidationError
from jobs.refresh.records import KINDS, SORT_FIELDS
from jobs.statuses import TASK_STATUSES as STATUSES
from jobs.statuses import TERMINAL
from web import auth, live, streams
from web.api import context
from web.api.blueprint import api
from web.api.bounds import takes
from web.api.context import as_json, body, manager, with_etag
from web.api.pagination import choice, envelope, page_args
from web.auth import requires

MAX_CLEANUP_DAYS = 36_500


def _stall() -> float:
    return context.settings().health.stall_seconds


def _view(status: dict[str, Any]) -> dict[str, Any]:
    return live.view(status, _stall())


@api.post("/refreshes", endpoint="create_refresh")
@requires("operate")
@takes()
def create() -> BaseResponse:
    data = body(("kind", "province"), ("kind",))
    kind = data["kind"]
    if kind not in KINDS:
        raise ValidationError(f"kind {kind!r} is not valid: expected one of {', '.join(KINDS)}")
    province = data.get("province")
    if kind == "province" and (not isinstance(province, str) or not province.strip()):
        raise ValidationError("a province refresh needs \"province\": a name (广东省, 广东) or a code (440000)")
    if kind == "full" and province is not None:
        raise ValidationError("a full refresh takes no \"province\"")
    principal = auth.current()
    created = manager().create(kind, province, principal.owner, request.headers.get("Idempotency-Key"))
    location = url_for("api.get_refresh", task_id=created.task_id)
    headers = {"Location": location, **({"Idempotent-Replayed": "true"} if created.replayed else {})}
    return as_json(_view(manager().get_task_status(created.task_id)), 200 if created.replayed else 201, headers)


@api.get("/refreshes")
@requires("read")
@takes("status", "kind", "owner", "sort", "order", "page", "page_size")
def list_refreshes() -> BaseResponse:
    page, page_size = page_args()
    owner = request.args.get("owner") or None
    result = manager().list_tasks(
        choice("status", STATUSES), page, page_size, choice("sort", SORT_FIELDS, "created_at") or "created_at",
        choice("order", ("asc", "desc"), "desc") or "desc", kind=choice("kind", KINDS), owner=owner,
    )
    return as_json(envelope([_view(s) for s in result["items"]], result["total"], page, page_size))


@api.get("/refreshes/<task_id>")
@requires("read")
@takes()
def get_refresh(task_id: str) -> BaseResponse:
    return with_etag(_view(manager().get_task_status(task_id)))


@api.get("/refreshes/<task_id>/provinces")
@requires("read")
@takes("page", "page_size")
def provinces(task_id: str) -> BaseResponse:
    page, page_size = page_args(default_size=100)
    rows = manager().province_progress(task_id)
    start = (page - 1) * page_size
    return with_etag(envelope(rows[start : start + page_size], len(rows), page, page_size))


@api.get("/refreshes/<task_id>/live")
@requires("read")
@takes()
def live_state(task_id: str) -> BaseResponse:
    """The refresh page's whole picture, for polling with If-None-Match when the event stream is down."""
    return with_etag(live.payload(manager(), task_id, _stall()))


@api.get("/refreshes/<task_id>/events")
@requires("read")
@takes()
def events(task_id: str) -> BaseResponse:
    the_manager, stall = manager(), _stall()
    the_manager.get_task_status(task_id)  # 404 before the stream opens
    slots: streams.StreamSlots = current_app.extensions["refreshq.streams"]
    conn = the_manager.conn
    shared: streams.SharedReads = current_app.extensions["refreshq.shared_reads"]
    return streams.stream(slots, shared, task_id, lambda: live.fingerprint(conn, task_id, stall),
                          lambda: live.payload(the_manager, task_id, stall))


def _own(task_id: str) -> dict[str, Any]:
    """The task, if the caller may act on it: admin, or its owner (403 otherwise)."""
    status = manager().get_task_status(task_id)
    principal = auth.current()
    if not principal.may("admin") and status["owner"] != principal.user:
        from werkzeug.exceptions import Forbidden

        raise Forbidden(f"task {task_id} belongs to {status['owner']!r}: only its owner or an admin may")
    return status


@api.post("/refreshes/<task_id>/cancel", endpoint="cancel_refresh")
@requires("operate")
@takes()
def cancel(task_id: str) -> BaseResponse:
    status = _own(task_id)
    if not manager().cancel_task(task_id):
        raise TaskStateError(f"task {task_id} is already {status['status']}: nothing to cancel")
    return as_json(_view(manager().get_task_status(task_id)))


@api.post("/refreshes/<task_id>/resume", endpoint="resume_refresh")
@requires("operate")
@takes()
def resume(task_id: str) -> BaseResponse:
    _own(task_id)
    manager().resume_task(task_id)
    return as_json(_view(manager().get_task_status(task_id)))


@api.post("/refreshes/cleanup")
@requires("admin")
@takes()
def cleanup() -> BaseResponse:
    data = body(("older_than_days", "statuses"))
    days = data.get("older_than_days", 7)
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) \
            or not 0 <= days <= MAX_CLEANUP_DAYS:
        raise ValidationError(f"older_than_days must be a number from 0 to {MAX_CLEANUP_DAYS}")
    statuses = data.get("statuses")
    if statuses is not None and (not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses)):
        raise ValidationError(f"statuses must be a list of: {', '.join(TERMINAL)}")
    return as_json({"removed": manager().cleanup_old_tasks(float(days), statuses or None)})
