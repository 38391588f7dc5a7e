"""How big each scenario runs: the issue's full sizes, and a tiny set for CI's `--quick`."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    name: str
    scale: int  # hospitals in the upstream's sample directory
    latency_ms: float  # per upstream request
    workers: int  # `refreshq worker` processes for the refreshes
    # REFRESHQ_UPSTREAM_CONCURRENCY of the workers: requests in flight across all workers (a global
    # lease in Redis since the limits work). The floor splits the same total over `workers` processes.
    concurrency: int
    load_concurrency: int  # the same for the refresh that status and cancel are measured against
    api_seconds: float  # how long get_task_status is sampled under load
    api_interval: float  # pause between two samples
    cli_calls: int  # `refreshq status --json` runs under load
    quiet_seconds: float  # no upstream request for this long after a cancel = the task stopped
    list_records: int  # task records stored before list_tasks is timed
    list_calls: int
    short_jobs: int  # no-op jobs per drain
    latency_jobs: int  # no-op jobs enqueued one by one to idle workers, for the enqueue-to-start latency
    enqueue_n: int  # tasks or jobs per enqueue-rate measurement
    refresh_timeout: float
    province: str | None = None  # scenario 1 refreshes only this province (and the floor crawls only it)
    web_idle: int = 1000  # scenario 6: TCP connections that send nothing, held while /healthz is probed
    web_streams: int = 300  # ...and event-stream clients of a pending refresh (past the cap: 503, kept alive)
    web_rounds: int = 200  # probes of /healthz and of an API GET, each on a new connection
    limited_rps: int = 100  # scenario 7: the rate-limited upstream's requests per rolling second
    limited_scale: int = 3000  # ...its directory (a full refresh: about 3,300 requests whatever the scale)
    limited_province: str | None = None  # ...only this province, else a full refresh


FULL = Sizes(
    name="full", scale=1_000_000, latency_ms=20, workers=2, concurrency=32, load_concurrency=32,
    api_seconds=10, api_interval=0.01, cli_calls=20, quiet_seconds=3, list_records=100_000, list_calls=300,
    short_jobs=20_000, latency_jobs=500, enqueue_n=5_000, refresh_timeout=1800,
)

# Tiny: every scenario runs, CI sees the suite still works, nobody reads the numbers. Scenario 1
# refreshes one province: a full refresh costs about 3,300 requests whatever the scale (one or more
# per leaf region), too many for a minute on a busy 2-core machine. The refresh under status/cancel
# is a full one at concurrency 4, so it is still going when the cancel comes.
QUICK = Sizes(
    name="quick", scale=20_000, latency_ms=20, workers=2, concurrency=32, load_concurrency=4,
    api_seconds=1.5, api_interval=0.01, cli_calls=2, quiet_seconds=1, list_records=2_000, list_calls=50,
    short_jobs=100, latency_jobs=30, enqueue_n=200, refresh_timeout=120, province="440000",
    web_idle=200, web_streams=100, web_rounds=30, limited_rps=10, limited_province="640000",
)


def choose(quick: bool, scale: int | None, short_jobs: int | None) -> Sizes:
    sizes = QUICK if quick else FULL
    if scale is not None:
        sizes = replace(sizes, scale=scale)
    if short_jobs is not None:
        sizes = replace(sizes, short_jobs=short_jobs)
    return sizes
