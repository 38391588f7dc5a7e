"""refreshq's views in place of rq-dashboard's, for the routes that load or change jobs without a serializer
(and its compact, which can lose jobs).

rq-dashboard 0.9 passes its configured serializer to some loads only: its job page, delete, requeue,
requeue-all, empty and workers list fetch jobs with RQ's default, pickle. Loading refreshq's JSON
jobs with pickle fails (the workers list answers 500 whenever a worker is busy) or, worse, succeeds
half-way (the meta becomes `{"unserialized": ...}`) and a requeue then saves that meta back pickled.
These handlers do the same things with RQ's JSON serializer on every load and save, and answer 404
for a job that does not exist. Two of its views are kept inside a wrapper: the job's JSON (404 for a job
gone meanwhile, not 500) and the jobs page without a queue (to refreshq's refresh queue, not RQ's default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, abort, current_app, jsonify, make_response, redirect, render_template, url_for
from rq import Queue, Worker
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer
from rq.version import VERSION as rq_version
from rq.worker import BaseWorker
from rq_dashboard.version import VERSION as rq_dashboard_version
from rq_dashboard.web import blueprint, escape_format_instance_list, format_job_description, serialize_date

from jobs import queues
from jobs.redis_values import as_texts

BLUEPRINT = blueprint.name
# The registries rq-dashboard shows, by the name in its URLs ("queued" is the queue itself).
REGISTRIES: dict[str, type[BaseRegistry] | None] = {
    "queued": None,
    "scheduled": ScheduledJobRegistry,
    "deferred": DeferredJobRegistry,
    "started": StartedJobRegistry,
    "finished": FinishedJobRegistry,
    "failed": FailedJobRegistry,
    "canceled": CanceledJobRegistry,
}
_NO_STORE = {"Cache-Control": "no-store"}


def _conn() -> redis.Redis:
    return current_app.redis_conn  # type: ignore[attr-defined,no-any-return]


def fetch_job(job_id: str) -> Job:
    try:
        return Job.fetch(job_id, connection=_conn(), serializer=JSONSerializer)
    except NoSuchJobError:
        abort(404, f"no job {job_id}")


def registry(queue_name: str, registry_name: str) -> BaseRegistry:
    kind = REGISTRIES[registry_name]
    assert kind is not None, "the queued jobs are a queue, not a registry"
    return kind(queue_name, connection=_conn(), serializer=JSONSerializer)


def count(queue_name: str, registry_name: str) -> int:
    if registry_name == "queued":
        return int(Queue(queue_name, connection=_conn(), serializer=JSONSerializer).count)
    return int(registry(queue_name, registry_name).get_job_count(cleanup=False))


def _ok(**fields: Any) -> tuple[Response, dict[str, str]]:
    return jsonify(status="OK", **fields), _NO_STORE


def _deletes_disabled() -> bool:
    return bool(current_app.config.get("RQ_DASHBOARD_DISABLE_DELETE"))


def job_view(instance_number: int, job_id: str) -> Response:
    job = fetch_job(job_id)
    response = make_response(render_template(
        "rq_dashboard/job.html",
        current_instance=instance_number,
        instance_list=escape_format_instance_list(current_app.config.get("RQ_DASHBOARD_REDIS_URL")),
        id=job.id,
        rq_url_prefix=url_for("rq_dashboard.queues_overview"),
        rq_dashboard_version=rq_dashboard_version,
        rq_version=rq_version,
        deprecation_options_usage=current_app.config.get("DEPRECATED_OPTIONS", False),
        enable_delete=not _deletes_disabled(),
    ))
    response.headers.update(_NO_STORE)
    return response


def list_workers(instance_number: int) -> tuple[Response, dict[str, str]]:
    workers = [_worker(w) for w in Worker.all(connection=_conn(), serializer=JSONSerializer)]
    workers.sort(key=lambda w: (w["state"], w["queues"], w["name"]))
    return jsonify(workers=workers), _NO_STORE


def _worker(worker: BaseWorker) -> dict[str, Any]:
    return {
        "name": worker.name, "pid": worker.pid, "queues": [q.name for q in worker.queues],
        "state": str(worker.get_state()), "current_job": _current_job(worker),
        "last_heartbeat": worker.last_heartbeat, "birth_date": worker.birth_date,
        "successful_job_count": worker.successful_job_count, "failed_job_count": worker.failed_job_count,
        "total_working_time": worker.total_working_time,
        "version": getattr(worker, "version", ""), "python_version": getattr(worker, "python_version", ""),
    }


def _current_job(worker: BaseWorker) -> dict[str, Any] | str:
    job_id = worker.get_current_job_id()
    if job_id is None:
        return "idle"
    try:
        job = Job.fetch(job_id, connection=_conn(), serializer=JSONSerializer)
    except NoSuchJobError:  # it ended and expired between the two reads
        return {"job_id": job_id, "description": None, "created_at": None, "call_string": job_id}
    try:
        call_string = job.get_call_string()
    except DeserializationError:  # not a JSON job (another application's, on this server)
        call_string = f"{job_id} (arguments not readable as JSON)"
    return {"job_id": job.id, "description": format_job_description(job),
            "created_at": serialize_date(job.created_at), "call_string": call_string}


def delete_job(job_id: str) -> tuple[Response, int | dict[str, str]]:
    if _deletes_disabled():
        return jsonify(status="DISABLED"), 403
    fetch_job(job_id).delete()
    return _ok()


def requeue_job(job_id: str) -> tuple[Response, dict[str, str]]:
    job = fetch_job(job_id)
    try:
        job.requeue()  # through the job's failed registry, with the job's (JSON) serializer
    except InvalidJobOperation:
        abort(409, f"job {job_id} is not in the failed registry")
    return _ok()


def requeue_all(queue_name: str) -> tuple[Response, dict[str, str]]:
    failed = registry(queue_name, "failed")
    requeued = 0
    for job_id in failed.get_job_ids(cleanup=False):
        try:
            failed.requeue(job_id)  # fetches with the registry's serializer: JSON
        except (NoSuchJobError, InvalidJobOperation):
            continue  # deleted or requeued by someone else meanwhile
        requeued += 1
    return _ok(count=requeued)


def empty_queue(queue_name: str, registry_name: str) -> tuple[Response, int | dict[str, str]]:
    if _deletes_disabled():
        return jsonify(status="DISABLED"), 403
    if registry_name == "queued":
        Queue(queue_name, connection=_conn(), serializer=JSONSerializer).empty()  # type: ignore[no-untyped-call]
        return _ok()
    jobs = registry(queue_name, registry_name)
    for job_id in jobs.get_job_ids(cleanup=False):
        try:
            Job.fetch(job_id, connection=_conn(), serializer=JSONSerializer).delete()
        except NoSuchJobError:
            jobs.remove(job_id)  # an entry whose job expired
    return _ok()


COMPACT_CHUNK = 1000  # queue entries read (and jobs checked) per round trip


def compact_queue(queue_name: str) -> tuple[Response, dict[str, str]]:
    """Remove the queue's entries whose job no longer exists, in place. RQ's Queue.compact renames the queue
    away and pushes the live ids back one by one: on an empty queue the RENAME fails (a 500), jobs enqueued
    meanwhile end up ahead of older ones, and the ids still in the copy are lost if the process stops there.
    Here the live entries never leave the queue; each dead id is removed with LREM."""
    conn = _conn()
    key = Queue(queue_name, connection=conn, serializer=JSONSerializer).key
    dead: set[str] = set()
    for start in range(0, int(conn.llen(key)), COMPACT_CHUNK):  # a worker may pop meanwhile: skipped is harmless
        ids = as_texts(conn.lrange(key, start, start + COMPACT_CHUNK - 1))
        with conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(Job.key_for(job_id))
            dead.update(job_id for job_id, found in zip(ids, pipe.execute(), strict=True) if not found)
    with conn.pipeline(transaction=False) as pipe:
        for job_id in dead:
            pipe.lrem(key, 0, job_id)
        pipe.execute()
    return _ok()


def _job_info(original: Callable[..., Any], **kw: Any) -> Any:
    try:
        return original(**kw)
    except NoSuchJobError:  # it expired or was deleted after the arguments were checked
        abort(404, f"no job {kw['job_id']}")


def _jobs_overview(original: Callable[..., Any], **kw: Any) -> Any:
    if kw["queue_name"] is None:  # /view/jobs shows RQ's "default" queue, which refreshq does not use
        return redirect(url_for(
            f"{BLUEPRINT}.jobs_overview", instance_number=kw["instance_number"], queue_name=queues.REFRESH,
            registry_name="queued", per_page=8, order="asc", page=1,
        ))
    return original(**kw)


# endpoint name in rq-dashboard's blueprint -> refreshq's handler
REPLACEMENTS: dict[str, Callable[..., Any]] = {
    "job_view": job_view,
    "list_workers": list_workers,
    "delete_job_view": delete_job,
    "requeue_job_view": requeue_job,
    "requeue_all": requeue_all,
    "empty_queue": empty_queue,
    "compact_queue": compact_queue,
}
# endpoint name -> refreshq's wrapper around rq-dashboard's own view
WRAPPED: dict[str, Callable[..., Any]] = {"job_info": _job_info, "jobs_overview": _jobs_overview}


def install(app: Flask) -> None:
    """Route rq-dashboard's endpoints to refreshq's views, once its blueprint is registered on `app`."""
    for name, handler in REPLACEMENTS.items():
        _replace(app, name, _instead(handler))
    for name, wrapper in WRAPPED.items():
        _replace(app, name, _around(wrapper))


def _replace(app: Flask, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Route rq-dashboard's endpoint `name` to `make(its original view)`."""
    endpoint = f"{BLUEPRINT}.{name}"
    if endpoint not in app.view_functions:  # another rq-dashboard version: its view would stay in place
        raise RuntimeError(f"rq-dashboard has no endpoint {endpoint} for refreshq to replace")
    app.view_functions[endpoint] = make(app.view_functions[endpoint])


def _instead(handler: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(_original: Callable[..., Any]) -> Callable[..., Any]:
        return handler

    return make


def _around(wrapper: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        return lambda **kw: wrapper(original, **kw)

    return make
