"""Every Redis key refreshq writes, in one place, so the whole data model is visible at once.

RQ's own keys (`rq:*`) belong to RQ; refreshq's live under `refreshq:`.
"""

from __future__ import annotations

PREFIX = "refreshq:"

# Processes
SCHEDULER_LOCK = PREFIX + "scheduler:lock"          # STRING owner token, PX expiry (owner-checked)
SCHEDULER_HEARTBEAT = PREFIX + "scheduler:beat"     # STRING ISO time of the active scheduler's last tick
# Never exists: LPUSHX on it is a write that stores nothing, refused when the server refuses writes
# (jobs.reconnect.writes_refused).
WRITES_PROBE = PREFIX + "writes:probe"

# Workers and pools (jobs.workforce). RQ's own worker registry (`rq:workers`, `rq:worker:<name>`) stays
# the list of workers; these keys add what RQ has no place for.
RQ_QUEUE_PREFIX = "rq:queue:"                       # RQ's Queue.redis_queue_namespace_prefix
RQ_JOB_PREFIX = "rq:job:"                           # RQ's Job.redis_job_namespace_prefix
RQ_SUSPENDED = "rq:suspended"                       # RQ's `rq suspend` flag: honoured by refreshq's workers too
SUSPENDED_QUEUES = PREFIX + "suspended:queues"      # SET of queue names no worker takes a job from
SUSPENDED_POOLS = PREFIX + "suspended:pools"        # SET of pool names whose workers take no job
POOLS = PREFIX + "pools"                            # SET of pool names ever started (their records expire)
# ZSET worker name -> expiry (Redis clock): workers holding claimed jobs (dequeued, not yet started); a
# claim whose worker stopped renewing it goes back to the front of its queue (jobs.duties.claims).
CLAIMERS = PREFIX + "claimers"
CLAIMS_PREFIX = PREFIX + "claims:"


# A queue's bell: a LIST of tokens, one pushed with each job (jobs.queues.BellQueue) and each job given back,
# capped; a worker waiting on several queues blocks on their bells, never on the queues (workers.claims).
BELL_PREFIX = PREFIX + "bell:"


def bell(queue: str) -> str:
    return f"{BELL_PREFIX}{queue}"


def claims(worker: str, queue: str) -> str:
    """LIST of job ids a worker dequeued from `queue` and has not started yet, in dequeue order."""
    return f"{CLAIMS_PREFIX}{worker}:{queue}"


def pool(name: str) -> str:
    """HASH: a running pool's record (host, pid, mode, queues, wanted, workers JSON, state), expiring."""
    return f"{PREFIX}pool:{name}"


def pool_wanted(name: str) -> str:
    """STRING: the number of processes a pool is to run; no expiry, so it outlives the pool's restart."""
    return f"{PREFIX}pool:{name}:wanted"


def pool_lock(name: str) -> str:
    """STRING owner token (redis-py Lock): one live pool process per pool name."""
    return f"{PREFIX}pool:{name}:lock"


def pool_channel(name: str) -> str:
    """Pub/sub channel of a pool's commands (drain, stop, scale)."""
    return f"{PREFIX}pool:{name}:commands"

# Task records and their indexes
TASKS_BY_CREATED = PREFIX + "tasks:created"         # ZSET task_id -> created_at (epoch)
TASKS_BY_UPDATED = PREFIX + "tasks:updated"         # ZSET task_id -> updated_at (epoch)


def task(task_id: str) -> str:
    """HASH: the task record (status dict fields, flat; nested values as JSON)."""
    return f"{PREFIX}task:{task_id}"


def tasks_with_status(status: str) -> str:
    """ZSET task_id -> created_at, one per status, for filtered listing."""
    return f"{PREFIX}tasks:status:{status}"


def tasks_with_status_by_updated(status: str) -> str:
    """ZSET task_id -> updated_at, one per status."""
    return f"{PREFIX}tasks:status:{status}:updated"


def tasks_of_kind(kind: str) -> str:
    """ZSET task_id -> created_at, one per kind (full, province): a kind never changes."""
    return f"{PREFIX}tasks:kind:{kind}"


def tasks_of_owner(owner: str) -> str:
    """ZSET task_id -> created_at, one per owner (the token's user, `cli` for the CLI)."""
    return f"{PREFIX}tasks:owner:{owner}"


def tasks_with_status_of_owner(status: str, owner: str) -> str:
    """ZSET task_id -> created_at, per status and owner: the per-user limits count these. The status comes
    first: statuses hold no colon, so no owner name can make two of these keys, or one of them and an owner's
    index, the same."""
    return f"{PREFIX}tasks:status:{status}:owner:{owner}"


def tasks_listing(token: str) -> str:
    """ZSET, seconds-long: the intersection of indexes one filtered listing pages through (then deleted)."""
    return f"{PREFIX}tmp:listing:{token}"


def owner_runs(owner: str) -> str:
    """ZSET RQ job id -> enqueued at: a limited user's named-task runs that may be queued or running."""
    return f"{PREFIX}owner:{owner}:runs"


def idempotency(digest: str) -> str:
    """STRING JSON {task_id, request}, 24 h: what a create with this (owner, Idempotency-Key) made."""
    return f"{PREFIX}idempotency:{digest}"


def task_stats(task_id: str) -> str:
    """HASH of integer counters (regions walked, leaves done, hospitals found, totals): the fields below."""
    return f"{PREFIX}task:{task_id}:stats"


# Fields of task_stats: the task's counters (jobs.refresh.progress.Counters reads them by these names) ...
PROVINCES_TOTAL, PROVINCES_WALKED, PROVINCES_PROCESSED = "provinces_total", "provinces_walked", "provinces_processed"
CITIES_TOTAL, CITIES_PROCESSED = "cities_total", "cities_processed"
DISTRICTS_TOTAL, DISTRICTS_PROCESSED = "districts_total", "districts_processed"
LEAVES_TOTAL, LEAVES_DONE, HOSPITALS_FOUND, CONFLICTS = "leaves_total", "leaves_done", "hospitals_found", "conflicts"
TOTAL_MISMATCHES = "total_mismatches"  # leaves taken with a stale `total` (see task_total_mismatches)
# ... and, per province, PROVINCE_LEAVES_TOTAL, PROVINCE_LEAVES_DONE and PROVINCE_HOSPITALS under `province_stat`.
PROVINCE_LEAVES_TOTAL, PROVINCE_LEAVES_DONE, PROVINCE_HOSPITALS = "leaves_total", "leaves_done", "hospitals"


def province_stat(province: str, counter: str) -> str:
    """The task_stats field of one province's counter: `p:440000:leaves_done`."""
    return f"p:{province}:{counter}"


def task_cancel(task_id: str) -> str:
    """STRING flag: present means the task was asked to stop; its value says why (user, timeout)."""
    return f"{PREFIX}task:{task_id}:cancel"


def task_provinces_ended(task_id: str) -> str:
    """HASH province code -> outcome ("published", "failed: ...", "cancelled"), set once per attempt."""
    return f"{PREFIX}task:{task_id}:provinces:ended"


def task_walked(task_id: str) -> str:
    """SET of region codes whose children were listed (counted once into the stats)."""
    return f"{PREFIX}task:{task_id}:walked"


def task_admission(task_id: str) -> str:
    """STRING, short TTL: a waiting task's plan job was just enqueued to try for a running slot."""
    return f"{PREFIX}task:{task_id}:admission"


def task_owners(task_id: str) -> str:
    """HASH unit ("plan" or a province code) -> the fencing token of the job execution that owns that part
    of the task's work ("<job id>:<execution id>", RQ's composite key). A takeover overwrites it, an
    abandonment or the unit's end deletes the entry, the task's end deletes the hash: every write an
    execution makes for the task is checked against it in the same step (jobs.fence)."""
    return f"{PREFIX}task:{task_id}:owners"


def task_jobs(task_id: str) -> str:
    """SET of the RQ job ids a task enqueued (to cancel the queued ones)."""
    return f"{PREFIX}task:{task_id}:jobs"


def task_failed_regions(task_id: str) -> str:
    """HASH region code -> JSON {name, level, error}: regions the upstream refused for good."""
    return f"{PREFIX}task:{task_id}:regions:failed"


def task_ids(task_id: str) -> str:
    """HASH hospital id -> the leaf code that staged it: the id index of tasks staged by versions before
    2026-12 (ids not at home in their leaf), still read when such a task is resumed; new tasks keep
    task_seen_ids instead (jobs/scripts/stage_leaf.lua)."""
    return f"{PREFIX}task:{task_id}:ids"


def task_home_ids(task_id: str) -> str:
    """HASH leaf code -> the ids it kept, each between newlines (one string a leaf): at home in it (characters
    2-7 of the id are its code) or not. An id is another leaf's when it is in the string of its home, or in
    task_seen_ids (jobs/scripts/stage_leaf.lua); kept until the task succeeds, for resumes and retries."""
    return f"{PREFIX}task:{task_id}:ids:home"


def task_seen_ids(task_id: str) -> str:
    """SET of the hospital ids the task kept that are not in a leaf whose ids are all at home (opaque ids,
    all of them): ids are unique by contract, so a second leaf listing one keeps nothing of it (kept as
    long as task_home_ids)."""
    return f"{PREFIX}task:{task_id}:ids:seen"


def task_conflicts(task_id: str) -> str:
    """HASH hospital id -> "kept_leaf,dropped_leaf": a bounded sample of ids listed under two leaves."""
    return f"{PREFIX}task:{task_id}:conflicts"


def task_total_mismatches(task_id: str) -> str:
    """HASH leaf code -> "total,listed": a bounded sample of leaves whose complete listing, the same twice,
    disagreed with the `total` the upstream stated (a stale count, taken; jobs.upstream.listing)."""
    return f"{PREFIX}task:{task_id}:mismatches"


def checkpoint_leaves(task_id: str, province: str) -> str:
    """SET of leaf codes of a province already fetched and staged: the checkpoint."""
    return f"{PREFIX}task:{task_id}:ckpt:{province}"


def province_plan(task_id: str, province: str) -> str:
    """HASH leaf code -> JSON leaf descriptor: the walked tree of a province, kept for resumes."""
    return f"{PREFIX}task:{task_id}:plan:{province}"


# API tokens and the web process
TOKENS = PREFIX + "tokens"                          # HASH SHA-256 of a token (hex) -> JSON {id, user, role, limits}
WEB_SECRET = PREFIX + "web:secret"                  # STRING random key that signs the web sessions' cookies


def signin_failures(kind: str, who: str) -> str:
    """STRING failed sign-ins of one client address or user (`kind`: "address" or "user") in the window that
    began with the first of them; expires with the window."""
    return f"{PREFIX}web:failures:{kind}:{who}"


# Published data: versioned per province; a version is the id of the task that wrote it.
PUBLISHED = PREFIX + "data:published"               # HASH province code -> version
PUBLISHED_META = PREFIX + "data:meta"               # HASH province code -> JSON {name, records, published_at}
# HASH province code -> "<created_ts> <task id>" of the published version's task: a pointer only ever moves
# to a version of a task created later (jobs.refresh.published.publish).
PUBLISHED_ORDER = PREFIX + "data:order"


def data_leaf(province: str, version: str, leaf: str) -> str:
    """STRING the records of one leaf region in one version: compact JSON lines in hospital-id order.
    (Versions staged before 2026-12 hold a HASH hospital id -> JSON here; readers take both.)"""
    return f"{PREFIX}data:{province}@{version}:leaf:{leaf}"


def data_sizes(province: str, version: str) -> str:
    """HASH leaf code -> how many records its data key holds (no entry: a HASH leaf, counted by HLEN)."""
    return f"{PREFIX}data:{province}@{version}:sizes"


def data_leaves(province: str, version: str) -> str:
    """HASH leaf code -> JSON leaf descriptor (name, level, city), the leaves of one version."""
    return f"{PREFIX}data:{province}@{version}:leaves"


def data_version_pattern(province: str, version: str) -> str:
    """Pattern matching every key of one version of a province."""
    return f"{PREFIX}data:{province}@{version}:*"


# Retries and the dead-letter registry
DEAD_LETTER = PREFIX + "dead"                       # ZSET job_id -> buried at (epoch)


def job_retry(job_id: str) -> str:
    """HASH: retry state of a job (attempt, decision, next retry time, last error)."""
    return f"{PREFIX}retry:{job_id}"


def step_back(job_id: str) -> str:
    """STRING, short TTL: the job that a running refresh job was asked to step back behind (jobs.duties.make_room)."""
    return f"{PREFIX}stepback:{job_id}"


def job_failure(job_id: str) -> str:
    """HASH: how the latest failure of a job is to be treated (kind, error, exception), recorded where it
    failed (jobs.failures) and taken by the retry sweeper."""
    return f"{PREFIX}failure:{job_id}"


def dead_letter_entry(job_id: str) -> str:
    """HASH: why a job was buried (kind, attempts, last error, task)."""
    return f"{PREFIX}dead:{job_id}"


# Global limits, shared by every worker on every machine
TASKS_WAITING = PREFIX + "limits:tasks:waiting"     # ZSET task_id -> created_at: tasks waiting for a slot
# The upstream gate (jobs.limits): a holder is one execution of a job, "<job id>@<worker name>#<horse pid>".
UPSTREAM_HOLDERS = PREFIX + "limits:upstream:holders"   # ZSET holder -> lease expiry (Redis clock, epoch)
UPSTREAM_SLOTS = PREFIX + "limits:upstream:slots"       # HASH holder -> in-flight slots it holds
UPSTREAM_WANTS = PREFIX + "limits:upstream:wants"       # HASH holder -> in-flight slots it asks for
# HASH: the per-second pacing shared by every worker (jobs.pacing): the next free send time (tat), the
# pause a Retry-After asked for (paused_until), the learned rate and what it was learned from.
UPSTREAM_PACE = PREFIX + "limits:upstream:pace"


# ZSET upstream identity (JSON, secret-free) -> expiry (epoch, the worker's clock): what the live workers
# configured for an upstream fetch from, renewed with their heartbeats (jobs.upstream.identity).
UPSTREAM_WORKERS = PREFIX + "upstream:workers"


# Upstream-derived caches
def upstream_provinces(spec_digest: str) -> str:
    """STRING JSON list of the provinces an upstream lists, cached briefly to validate names."""
    return f"{PREFIX}upstream:{spec_digest}:provinces"


# Named tasks: schedules, execution history, chains and batches, data snapshots
SCHEDULES = PREFIX + "schedules"                    # SET of schedule names
SCHEDULES_REMOVED = PREFIX + "schedules:removed"    # SET of names an operator removed: task defaults stay out
# rq-scheduler's scheduled-jobs ZSET (template job id -> next run, epoch), under refreshq's prefix so a
# stray `rqscheduler` process on the same server never sees (and double-enqueues) refreshq's schedules.
SCHEDULES_DUE = PREFIX + "schedules:due"
HISTORY_TASKS = PREFIX + "histories"                # SET of task names that have execution history
SNAPSHOTS = PREFIX + "snapshots"                    # HASH local date -> JSON statistics of the published data


def schedule(name: str) -> str:
    """HASH: one schedule (task, trigger, arguments, options, paused, last fire and run, counters)."""
    return f"{PREFIX}schedule:{name}"


def schedule_runs(name: str) -> str:
    """SET of the RQ job ids a schedule enqueued that may still be queued or running (max_instances)."""
    return f"{PREFIX}schedule:{name}:runs"


def history(task_name: str) -> str:
    """ZSET execution id -> started at (epoch): a named task's executions, oldest first."""
    return f"{PREFIX}history:{task_name}"


def history_entries(task_name: str) -> str:
    """HASH execution id -> JSON record (start, end, duration, outcome, result summary, error, traceback)."""
    return f"{PREFIX}history:{task_name}:entries"


def workflow(workflow_id: str) -> str:
    """HASH: a chain or batch (its items, their job ids and statuses, the callback)."""
    return f"{PREFIX}workflow:{workflow_id}"


# Observability (jobs/observe): written where the events happen (the task-status scripts, staging, the
# end of a named run, the sweeper, alert deliveries), so every figure survives any process.
METRIC_COUNTERS = PREFIX + "metrics:counters"       # HASH "name|label|label" -> int, monotonic (Prometheus counters)
METRIC_TOTALS = PREFIX + "metrics:total"            # HASH sums of every ended refresh run (see metric_hour)
RUN_KINDS = PREFIX + "runs:kinds"                   # SET of the kinds with a run list ("full", "province", "task:NAME")
OUTCOMES = PREFIX + "observe:outcomes"              # HASH subject ("full", "province:CODE", "task:NAME") -> JSON
METRIC_HOUR_SECONDS = 3600
METRIC_HOUR_TTL = 8 * 86_400                        # the 7-day window and a day to spare


def metric_hour(hour_ts: int) -> str:
    """HASH of the refresh runs that ended in the hour starting at `hour_ts` (epoch, a multiple of 3600):
    ended|STATUS, run_sum|STATUS, run_n|STATUS, wait_sum, wait_n, hospitals."""
    return f"{PREFIX}metrics:hour:{hour_ts}"


def run_seconds(kind: str) -> str:
    """HASH histogram of run times of one kind: upper bound ("60", "+Inf") -> runs in that bucket, sum, count."""
    return f"{PREFIX}metrics:runtime:{kind}"


def run_list(kind: str) -> str:
    """LIST of JSON run summaries of one kind, newest first, the last 200 (performance per task type)."""
    return f"{PREFIX}runs:{kind}"


# Alerts: state per fingerprint, an outbox of notices, delivery records.
ALERTS = PREFIX + "alerts"                          # HASH fingerprint -> JSON state (pending/firing, since, last sent)
ALERTS_EVALUATED = PREFIX + "alerts:evaluated"      # STRING epoch of the last evaluation (by any scheduler)
ALERT_OUTBOX = PREFIX + "alerts:outbox"             # ZSET notice id -> when its next delivery attempt is due
ALERT_CLAIMS = PREFIX + "alerts:claims"             # HASH notice id -> scheduler lock token of its deliverer
ALERT_DELIVERIES = PREFIX + "alerts:deliveries"     # LIST of JSON delivery attempts, newest first (bounded)
ALERT_CHANNELS = PREFIX + "alerts:channels"         # HASH channel -> JSON {last_ok_at, last_error, failures, ...}


def alert_notice(notice_id: str) -> str:
    """HASH: one notice (its alerts as JSON, created at, each channel's state, attempts, last error)."""
    return f"{PREFIX}alerts:notice:{notice_id}"



def status_indexes(statuses: list[str], owner: str | None) -> list[str]:
    """Per status: its index by creation, by update and (with an owner) the owner's (transition.lua, start.lua)."""
    out: list[str] = []
    for status in statuses:
        out += [tasks_with_status(status), tasks_with_status_by_updated(status)]
        out += [tasks_with_status_of_owner(status, owner)] if owner else []
    return out


# The keys each Lua script (jobs/scripts/*.lua: their headers list them) takes together, where a hash tag would
# go for Redis Cluster (a script's keys share one slot; step also takes RQ's keys of one job, untagged: RQ names them):
# - one task ({task_id}): task*, checkpoint_leaves, its version's data_*: stage_leaf, count_once, province_ended,
#   claim_unit, release_job; publish too, with the province's published hashes and the old version's data_*
# - the task indexes (TASKS_BY_UPDATED, tasks_with_status*, TASKS_WAITING) with one task's keys: transition,
#   start, progress (no per-task tag holds them: the indexes would leave the scripts, or all share one slot)
# - the observe keys of a run's end (jobs.observe.run_ended): transition; METRIC_COUNTERS also with every fenced
#   script (stale writes), stage_leaf, step, upstream_pace_report
# - the upstream gate (UPSTREAM_*): upstream_hold, upstream_pace_take, upstream_pace_report
# - one queue ({queue}): RQ's queue, its bell, the workers' claims on it: move_to_front; claim, step, release_claims,
#   requeue_orphaned_claims take every queue of a worker, with the guards (RQ_SUSPENDED, SUSPENDED_*, CLAIMERS)
# - one named task's history, one schedule, the alert outbox: trim_history and end_if_running, note_run, claim_due
