"""GET /metrics: Prometheus text, built with prometheus-client by one collector that reads Redis at scrape
time (no per-process or multiprocess state: RQ's work-horses are forked and exit, so only what Redis holds
survives them).

Counters are the monotonic ones refreshq keeps in Redis (jobs.observe.counters); gauges and the queue, worker
and registry figures are read from Redis now (jobs.observe.snapshot). Labels are bounded: kinds, statuses,
queues, registries, worker states, named-task names, channels; refresh ids only of running refreshes.

Metric and label names are what dashboards and alert rules query, so they stay as they were, though
"task" in `refreshq_tasks`, `refreshq_tasks_ended`, `refreshq_running_task_*` and the `task_id` label means
a refresh, and `refreshq_refresh_run_seconds` times refreshes, not runs (the glossary: a run is a named
task's); their help says what they count.

With REFRESHQ_WEB_PASSWORD or REFRESHQ_METRICS_TOKEN set, a scrape must show one of them: the password as
HTTP Basic (any user), the token as `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Iterator

import redis
from flask import Flask, Response, current_app, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobs import keys
from jobs.config import Settings
from jobs.observe import counters, snapshot
from jobs.observe import outcomes as run_lists
from jobs.pacing import pace_fields, pace_view
from jobs.redis_values import as_text_map, as_texts
from jobs.statuses import TASK_STATUSES, TERMINAL

PATH = "/metrics"
SCRAPE_ACCESS = "password or metrics token"  # checked by the view itself (_gate)

# Stored counter name -> (metric name without _total, help, label names).
COUNTERS = {
    counters.TASKS_ENDED: ("refreshq_tasks_ended", "Refreshes ended, by kind and final status.",
                           ("kind", "status")),
    counters.TASK_RUNS: ("refreshq_task_runs", "Named-task runs (attempts) ended, by task and status.",
                         ("task", "status")),
    counters.RECORDS_WRITTEN: ("refreshq_records_written", "Hospital records staged by refreshes.", ()),
    counters.UPSTREAM_REQUESTS: ("refreshq_upstream_requests", "Upstream requests sent, by upstream kind.",
                                 ("kind",)),
    counters.UPSTREAM_ERRORS: ("refreshq_upstream_errors", "Upstream requests that failed, by kind and error.",
                               ("kind", "error")),
    counters.RETRIES: ("refreshq_retries", "Failed jobs retried (the sweeper's, a named task's own).", ("kind",)),
    counters.DEAD_LETTERS: ("refreshq_dead_letters", "Jobs moved to the dead-letter registry.", ("kind",)),
    counters.ALERTS_SENT: ("refreshq_alert_notifications", "Alert notices delivered, by channel and status.",
                           ("channel", "status")),
    counters.ALERT_FAILURES: ("refreshq_alert_delivery_failures", "Alert delivery attempts that failed.",
                              ("channel",)),
    counters.STALE_WRITES: ("refreshq_stale_writes_refused", "Writes refused because the job execution making "
                            "them no longer owned the work (paused, abandoned or taken over).", ("write",)),
    counters.TOTAL_MISMATCHES: ("refreshq_upstream_total_mismatches", "Leaves taken with a stale total: their "
                                "listing, the same twice, disagreed with the count the upstream stated.", ()),
    counters.RECONCILED: ("refreshq_reconciled", "Lost work the scheduler took up again (its job was gone), by kind.",
                          ("kind",)),
    counters.UPSTREAM_THROTTLED: ("refreshq_upstream_throttled", "Throttling answers from the upstream (429; 503 "
                                  "with Retry-After), and clear rises in its answer time that backed the learned "
                                  "rate off (latency).", ("signal",)),
}


def _counter_families(conn: redis.Redis) -> Iterator[Metric]:
    stored = counters.read_counters(conn)
    for kind in run_lists.REFRESH_KINDS:
        for status in TERMINAL:  # every series from the first scrape, so rate() sees its start
            stored.setdefault((counters.TASKS_ENDED, kind, status), 0.0)
    stored.setdefault((counters.RECORDS_WRITTEN,), 0.0)
    stored.setdefault((counters.TOTAL_MISMATCHES,), 0.0)
    for stored_name, (metric, doc, labels) in COUNTERS.items():
        family = CounterMetricFamily(metric, doc, labels=list(labels))
        for field, value in sorted(stored.items()):
            if field[0] == stored_name and len(field) == len(labels) + 1:
                family.add_metric(list(field[1:]), value)
        yield family


def _histogram_families(conn: redis.Redis) -> Iterator[Metric]:
    kinds = run_lists.run_kinds(conn)
    with conn.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.hgetall(keys.run_seconds(kind))
        stored = dict(zip(kinds, pipe.execute(), strict=True))
    refresh = HistogramMetricFamily("refreshq_refresh_run_seconds", "Run time of refreshes (from start).",
                                    labels=["kind"])
    named = HistogramMetricFamily("refreshq_task_run_seconds", "Run time of named-task runs.", labels=["task"])
    for kind, raw in stored.items():
        stored_buckets, total, _count = counters.cumulative_buckets(as_text_map(raw))
        # le="60.0", as prometheus-client formats its own histograms
        buckets = [(floatToGoString(float(le)), n) for le, n in stored_buckets]  # type: ignore[no-untyped-call]
        if kind in run_lists.REFRESH_KINDS:
            refresh.add_metric([kind], buckets, total)
        elif raw:
            named.add_metric([kind.removeprefix("task:")], buckets, total)
    yield refresh
    yield named


def _gauge(name: str, doc: str, labels: tuple[str, ...], rows: list[tuple[tuple[str, ...], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def _gauge_families(conn: redis.Redis) -> Iterator[Metric]:
    shot = snapshot.take(conn, with_registries=True)
    yield _gauge("refreshq_tasks", "Refreshes by status now.", ("status",),
                 [((s,), shot.tasks_by_status[s]) for s in TASK_STATUSES])
    yield _gauge("refreshq_queue_jobs", "Jobs waiting in each queue.", ("queue",),
                 [((q.name,), q.depth) for q in shot.queues])
    yield _gauge("refreshq_queue_oldest_job_age_seconds", "Seconds the job at the head of each queue has waited "
                 "(0: empty).", ("queue",), [((q.name,), round(q.head_age or 0.0, 3)) for q in shot.queues])
    yield _gauge("refreshq_queue_live_workers", "Live workers listening to each queue.", ("queue",),
                 [((q.name,), q.live_workers) for q in shot.queues])
    yield _gauge("refreshq_registry_jobs", "Jobs in each of RQ's registries, per queue.", ("queue", "registry"),
                 [(key, n) for key, n in sorted(shot.registries.items())])
    yield _gauge("refreshq_workers", "Live workers by state.", ("state",),
                 [((state,), n) for state, n in sorted(shot.workers_by_state.items())])
    yield _gauge("refreshq_dead_letter_jobs", "Jobs in the dead-letter registry now.", (), [((), shot.dead_letters)])
    running = [row.as_active(shot.now) for row in shot.running]
    yield _gauge("refreshq_running_task_progress", "Progress (percent) of each running refresh.", ("task_id", "kind"),
                 [((r["task_id"], r["kind"] or ""), r["progress"]) for r in running])
    yield _gauge("refreshq_running_task_seconds", "Seconds each running refresh has run.", ("task_id", "kind"),
                 [((r["task_id"], r["kind"] or ""), r["running_seconds"] or 0.0) for r in running])
    beat = shot.now - shot.scheduler_beat if shot.scheduler_beat is not None else None
    yield _gauge("refreshq_scheduler_up", "1 while a scheduler is active (its heartbeat under 30 s old).", (),
                 [((), 1.0 if beat is not None and beat <= 30 else 0.0)])
    yield _gauge("refreshq_redis_memory_used_bytes", "Redis used_memory.", (), [((), shot.memory_used)])
    yield _gauge("refreshq_redis_memory_max_bytes", "Redis maxmemory (0: none).", (), [((), shot.memory_max)])
    yield from _pacing_families(conn)


def _pacing_families(conn: redis.Redis) -> Iterator[Metric]:
    """The upstream's pacing (jobs.pacing), once a worker has paced: the rate every worker sends at, by mode
    (+Inf: learning, nothing throttled yet), and the seconds a Retry-After still pauses them."""
    view = pace_view(conn.hmget(keys.UPSTREAM_PACE, pace_fields()))
    if view is None:
        return
    rate = float("inf") if view["rate"] is None else float(view["rate"])
    yield _gauge("refreshq_upstream_rate_limit", "Requests per second every worker together sends the upstream "
                 "at most: REFRESHQ_UPSTREAM_RPS (fixed) or the rate learned (auto).", ("mode",),
                 [((view["mode"],), rate)])
    yield _gauge("refreshq_upstream_paused_seconds", "Seconds a Retry-After still pauses every worker's requests.",
                 (), [((), view["paused_seconds"])])


def _alert_families(conn: redis.Redis) -> Iterator[Metric]:
    with conn.pipeline(transaction=False) as pipe:
        pipe.hvals(keys.ALERTS)
        pipe.zcard(keys.ALERT_OUTBOX)
        states, outbox = pipe.execute()
    firing: dict[str, int] = {"warning": 0, "critical": 0}
    for raw in as_texts(states):
        state = json.loads(raw)
        if state["state"] == "firing":
            firing[state["severity"]] = firing.get(state["severity"], 0) + 1
    yield _gauge("refreshq_alerts_firing", "Alerts firing now, by severity.", ("severity",),
                 [((s,), n) for s, n in sorted(firing.items())])
    yield _gauge("refreshq_alert_outbox_notices", "Alert notices not yet delivered.", (), [((), int(outbox))])


class RedisCollector(Collector):
    """Everything /metrics shows, read from Redis when scraped."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        yield from _counter_families(self.conn)
        yield from _histogram_families(self.conn)
        yield from _gauge_families(self.conn)
        yield from _alert_families(self.conn)


def render(conn: redis.Redis, accept: str | None = None) -> tuple[bytes, str]:
    """One scrape: the body and its content type, in the format the scraper's Accept header asks for
    (prometheus-client's negotiation: OpenMetrics, or the text format)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(conn))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def authorized(settings: Settings, header: str | None) -> bool:
    """A scrape shows the web password (HTTP Basic, any user) or the metrics token (Bearer), when either is set."""
    if settings.web.password is None and settings.web.metrics_token is None:
        return True
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() == "bearer" and settings.web.metrics_token is not None:
        return hmac.compare_digest(credentials.strip().encode(), settings.web.metrics_token.encode())
    if scheme.lower() == "basic" and settings.web.password is not None:
        try:
            _user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), settings.web.password.encode())
    return False


def _gate(settings: Settings, header: str | None) -> Response | None:
    """None when the scrape may go on; else 401 (the failure counted when credentials were shown, against
    the password's user for Basic: web.throttle), or 429 with Retry-After while the address or that user
    is throttled, the right credentials included."""
    if settings.web.password is None and settings.web.metrics_token is None:
        return None
    from web.auth import PASSWORD_USER, auth_of

    throttle = auth_of(current_app).throttle
    user = PASSWORD_USER if (header or "").lower().startswith("basic ") else None
    wait = throttle.wait(user)
    if wait:
        return Response(f"too many failed sign-ins: try again in {wait} s\n", 429, {"Retry-After": str(wait)},
                        mimetype="text/plain")
    if authorized(settings, header):
        return None
    if header:
        throttle.failed(user)
    return Response("authentication required\n", 401,
                    {"WWW-Authenticate": 'Basic realm="refreshq", Bearer realm="refreshq"'})


def mount(app: Flask, settings: Settings) -> None:
    from web.auth import declares

    @app.get(PATH)
    @declares(SCRAPE_ACCESS)
    def metrics() -> Response:
        refused = _gate(settings, request.headers.get("Authorization"))
        if refused is not None:
            return refused
        conn: redis.Redis = current_app.redis_conn  # type: ignore[attr-defined]
        body, content_type = render(conn, request.headers.get("Accept"))
        return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})
