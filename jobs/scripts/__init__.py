"""The Lua scripts refreshq runs in Redis: each one a read-check-write that must be atomic."""

from __future__ import annotations

import redis

from jobs import keys
from jobs.scripts.claims import CLAIM, RELEASE_CLAIMS, RENEW_CLAIMS, REQUEUE_ORPHANED_CLAIMS, STEP
from jobs.scripts.fence import CLAIM as CLAIM_UNIT
from jobs.scripts.fence import PUBLISH, RELEASE_JOB, STALE_CHECK
from jobs.scripts.gate import UPSTREAM_HOLD, UPSTREAM_PACE_REPORT, UPSTREAM_PACE_TAKE
from jobs.scripts.staging import STAGE_LEAF

# Upper bounds (seconds) of the run-time histograms (a refresh takes 30-60 minutes; buckets up to 4 h).
RUN_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400)

# What ending a refresh run records, once, in the same script as the status change (jobs/observe reads it):
# the ended-tasks counter, the run-time histogram, the hour's and all-time sums, the kind's run list (the
# last 200) and, unless cancelled, the latest outcome of its subject ("full" or "province:CODE"), which the
# alert rules read. A full refresh that succeeds supersedes every province's failed outcome.
_BOUNDS = "{" + ", ".join(str(b) for b in RUN_SECONDS_BUCKETS) + "}"
_RUN_ENDED = """
local function bucket_of(seconds)
  for _, bound in ipairs(""" + _BOUNDS + """) do
    if seconds <= bound then return tostring(bound) end
  end
  return '+Inf'
end
local function add_sums(key, to, run, wait, records)
  redis.call('HINCRBY', key, 'ended|' .. to, 1)
  if run then
    redis.call('HINCRBYFLOAT', key, 'run_sum|' .. to, run)
    redis.call('HINCRBY', key, 'run_n|' .. to, 1)
    redis.call('HINCRBYFLOAT', key, 'wait_sum', wait)
    redis.call('HINCRBY', key, 'wait_n', 1)
  end
  redis.call('HINCRBY', key, 'hospitals', records)
end
local function subject_of(kind, provinces)
  if kind ~= 'province' then return kind end
  local ok, list = pcall(cjson.decode, provinces or '[]')
  if ok and type(list) == 'table' and list[1] and list[1].code then return 'province:' .. list[1].code end
  return 'province:?'
end
local function run_ended(id, to, now, p)
  local r = redis.call('HMGET', KEYS[1], 'kind', 'run_started_ts', 'queue_wait_seconds', 'run_hospitals_start',
                       'provinces', 'error_message')
  local kind = r[1] or 'full'
  local found = tonumber(redis.call('HGET', p .. 'task:' .. id .. ':stats', 'hospitals_found') or '0')
  local records = math.max(0, found - tonumber(r[4] or '0'))
  local run, wait = false, false
  if r[2] then run, wait = math.max(0, now - tonumber(r[2])), tonumber(r[3] or '0') end
  redis.call('HINCRBY', p .. 'metrics:counters', 'tasks_ended|' .. kind .. '|' .. to, 1)
  local summary = {task_id = id, status = to, ended_ts = now, records = records}
  if run then
    local histogram = p .. 'metrics:runtime:' .. kind
    redis.call('HINCRBY', histogram, bucket_of(run), 1)
    redis.call('HINCRBYFLOAT', histogram, 'sum', run)
    redis.call('HINCRBY', histogram, 'count', 1)
    summary.run_seconds, summary.queue_wait_seconds = run, wait
  end
  local hour = p .. 'metrics:hour:' .. (math.floor(now / 3600) * 3600)
  add_sums(hour, to, run, wait, records)
  redis.call('EXPIRE', hour, """ + str(keys.METRIC_HOUR_TTL) + """)
  add_sums(p .. 'metrics:total', to, run, wait, records)
  redis.call('LPUSH', p .. 'runs:' .. kind, cjson.encode(summary))
  redis.call('LTRIM', p .. 'runs:' .. kind, 0, 199)
  if to == 'CANCELLED' then return end
  local outcomes = p .. 'observe:outcomes'
  local outcome = {status = to, task_id = id, ended_ts = now, error = string.sub(r[6] or '', 1, 500)}
  redis.call('HSET', outcomes, subject_of(kind, r[5]), cjson.encode(outcome))
  if kind == 'full' and to == 'SUCCEEDED' then
    local all = redis.call('HGETALL', outcomes)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 9) == 'province:' and cjson.decode(all[i + 1]).status == 'FAILED' then
        redis.call('HSET', outcomes, all[i], cjson.encode({status = to, task_id = id, ended_ts = now, error = ''}))
      end
    end
  end
end
"""

# Move a task record from one of the allowed statuses to another, keeping the indexes in step (the
# status ones, and the owner's per status that the per-user limits count: keys.tasks_with_status_of_owner).
# KEYS: record. ARGV: allowed (comma list), to, updated_at (ISO), now (epoch), prefix, field, value, ...
# Returns "OK", or the current status when the move is not allowed, or false when there is no record.
TRANSITION = _RUN_ENDED + """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current .. ',', 1, true) then return current end
local id = redis.call('HGET', KEYS[1], 'task_id')
local created = redis.call('HGET', KEYS[1], 'created_ts')
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', ARGV[5] .. 'tasks:status:' .. current, id)
redis.call('ZADD', ARGV[5] .. 'tasks:status:' .. ARGV[2], created, id)
redis.call('ZREM', ARGV[5] .. 'tasks:status:' .. current .. ':updated', id)
redis.call('ZADD', ARGV[5] .. 'tasks:status:' .. ARGV[2] .. ':updated', ARGV[4], id)
redis.call('ZADD', ARGV[5] .. 'tasks:updated', ARGV[4], id)
local active = current == 'PENDING' or current == 'RUNNING'
if ARGV[2] ~= 'PENDING' and ARGV[2] ~= 'RUNNING' then
  -- an ended task's work belongs to no execution any more (jobs.refresh.fence)
  redis.call('DEL', ARGV[5] .. 'task:' .. id .. ':owners')
end
if ARGV[2] == 'PENDING' and not active then
  -- a resume: its run is timed from its own start, its queue wait from now
  redis.call('HDEL', KEYS[1], 'run_started_ts', 'queue_wait_seconds', 'run_hospitals_start')
  redis.call('HSET', KEYS[1], 'queued_ts', ARGV[4])
elseif active and (ARGV[2] == 'SUCCEEDED' or ARGV[2] == 'FAILED' or ARGV[2] == 'CANCELLED') then
  run_ended(id, ARGV[2], tonumber(ARGV[4]), ARGV[5])
end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then
  redis.call('ZREM', ARGV[5] .. 'tasks:status:' .. current .. ':owner:' .. owner, id)
  redis.call('ZADD', ARGV[5] .. 'tasks:status:' .. ARGV[2] .. ':owner:' .. owner, created, id)
end
return 'OK'
"""

# Start (or keep running) a task within the global limit on running tasks, first come first served.
# KEYS: record, waiting zset. ARGV: limit, updated_at, now, prefix, field, value, ...
# Returns "OK" (running), "WAIT" (no slot yet: queued in order), or the status when it cannot start.
START = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
if current == 'RUNNING' then return 'OK' end
if current ~= 'PENDING' then return current end
local id = redis.call('HGET', KEYS[1], 'task_id')
local created = redis.call('HGET', KEYS[1], 'created_ts')
local running = ARGV[4] .. 'tasks:status:RUNNING'
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if redis.call('ZCARD', running) >= tonumber(ARGV[1]) or (head and head ~= id) then
  redis.call('ZADD', KEYS[2], 'NX', created, id)
  return 'WAIT'
end
redis.call('ZREM', KEYS[2], id)
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'updated_at', ARGV[2])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', ARGV[4] .. 'tasks:status:PENDING', id)
redis.call('ZREM', ARGV[4] .. 'tasks:status:PENDING:updated', id)
redis.call('ZADD', running, created, id)
redis.call('ZADD', running .. ':updated', ARGV[3], id)
redis.call('ZADD', ARGV[4] .. 'tasks:updated', ARGV[3], id)
if redis.call('HEXISTS', KEYS[1], 'run_started_ts') == 0 then
  -- the run's first start: its queue wait (from creation, or from its resume) and its records so far
  local queued = tonumber(redis.call('HGET', KEYS[1], 'queued_ts') or created)
  local found = redis.call('HGET', ARGV[4] .. 'task:' .. id .. ':stats', 'hospitals_found') or '0'
  redis.call('HSET', KEYS[1], 'run_started_ts', ARGV[3], 'queue_wait_seconds', math.max(0, tonumber(ARGV[3]) - queued),
             'run_hospitals_start', found)
end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then
  redis.call('ZREM', ARGV[4] .. 'tasks:status:PENDING:owner:' .. owner, id)
  redis.call('ZADD', ARGV[4] .. 'tasks:status:RUNNING:owner:' .. owner, created, id)
end
return 'OK'
"""

# Move a job id from anywhere in a queue's list to its head, if it is still there (not yet dequeued); with
# a second id still queued (jobs.duties.make_room), right behind that one instead.
# KEYS: queue list. ARGV: job id, [id to go behind]. Returns 1 when moved.
MOVE_TO_FRONT = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[2] and ARGV[2] ~= '' and redis.call('LINSERT', KEYS[1], 'AFTER', ARGV[2], ARGV[1]) > 0 then return 1 end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
"""

# Record progress of a running task; progress only ever grows, and `progress_ts` says when it last did
# (the stalled flag: REFRESHQ_STALL_SECONDS).
# KEYS: record, the task's owners hash (the fence). ARGV: progress, current_step, updated_at, now, eta, prefix,
# the fence's unit and token. Returns 1 when written, 0 when the task is not running, 'STALE' when refused.
PROGRESS = STALE_CHECK + """
if stale(KEYS[2], ARGV[7], ARGV[8], 'progress') then return 'STALE' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'RUNNING' then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0')
-- progress_moved_ts: when it last grew (the health rule on stalled tasks reads it)
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'progress_moved_ts', ARGV[4]) end
redis.call('HSET', KEYS[1], 'current_step', ARGV[2], 'updated_at', ARGV[3], 'eta_seconds', ARGV[5])
local id = redis.call('HGET', KEYS[1], 'task_id')
redis.call('ZADD', ARGV[6] .. 'tasks:updated', ARGV[4], id)
redis.call('ZADD', ARGV[6] .. 'tasks:status:RUNNING:updated', ARGV[4], id)
return 1
"""

# Count a region once: add it to a set and, only if it was new, add to counters.
# KEYS: set, stats hash. ARGV: member, field, increment, field, increment, ...
COUNT_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Record how a province's part of a task ended, once, and end every claim on it (no execution writes for
# an ended province); return 1 when every planned province has ended, 'STALE' when the execution recording it
# no longer owns its unit (the province, or the plan for a province the plan job refused).
# KEYS: ended hash, stats hash, owners hash. ARGV: province, outcome, published (1/0), fence unit, token.
PROVINCE_ENDED = STALE_CHECK + """
if stale(KEYS[3], ARGV[4], ARGV[5], 'end') then return 'STALE' end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 and ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'provinces_processed', 1)
end
redis.call('HDEL', KEYS[3], ARGV[1])
local total = tonumber(redis.call('HGET', KEYS[2], 'provinces_total') or '0')
if redis.call('HLEN', KEYS[1]) >= total then return 1 end
return 0
"""

# A named task's history (jobs.named.history): drop records started before the cutoff, then all but the
# newest `limit`, keeping the index and the records in step. KEYS: index zset, records hash.
# ARGV: cutoff (epoch), limit. Returns how many records were dropped.
TRIM_HISTORY = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local removed = 0
for i = 1, #old do
  redis.call('ZREM', KEYS[1], old[i]); redis.call('HDEL', KEYS[2], old[i]); removed = removed + 1
end
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if extra > 0 then
  local ids = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  for i = 1, #ids do
    redis.call('ZREM', KEYS[1], ids[i]); redis.call('HDEL', KEYS[2], ids[i]); removed = removed + 1
  end
end
return removed
"""

# Overwrite a history record only while it still says RUNNING (a late repair must not undo a real ending).
# KEYS: records hash. ARGV: execution id, the new record (JSON). Returns 1 when written.
END_IF_RUNNING = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if cjson.decode(raw)['status'] ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Record how a schedule's run ended (jobs.named.schedules): count it, and show it if it is still the
# schedule's latest run (and the schedule exists). KEYS: schedule hash, its runs set.
# ARGV: job id, status, ended at, duration, error.
NOTE_RUN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], ARGV[2] == 'SUCCEEDED' and 'succeeded' or 'failed', 1)
if redis.call('HGET', KEYS[1], 'last_job_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'last_run_status', ARGV[2], 'last_run_ended_at', ARGV[3], 'last_run_duration', ARGV[4],
           'last_run_error', ARGV[5])
return 1
"""



# Claim the alert notices due for delivery: each is pushed a lease ahead, so two deliverers never take the
# same one at once, and recorded with the scheduler lock's token of the claimer. A claim whose token is not
# the lock's now was made by a scheduler that is no longer the active one (killed, or stopped mid-delivery):
# it is due at once, not when its lease (minutes, sized for the slowest delivery) lapses.
# KEYS: outbox zset, claims hash, scheduler lock. ARGV: now, lease seconds, most notices.
# Returns their ids, oldest due first, then those taken over.
CLAIM_DUE = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
local owner = redis.call('GET', KEYS[3]) or ''
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local taken = {}
for _, id in ipairs(due) do taken[id] = true end
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local id = held[i]
  if not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('HDEL', KEYS[2], id)
  elseif held[i + 1] ~= owner and not taken[id] and #due < limit then
    taken[id] = true
    table.insert(due, id)
  end
end
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), id)
  redis.call('HSET', KEYS[2], id, owner)
end
return due
"""


class Scripts:
    """The scripts registered on one connection (EVALSHA, falling back to EVAL after a restart)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.transition = conn.register_script(TRANSITION)
        self.start = conn.register_script(START)
        self.upstream_hold = conn.register_script(UPSTREAM_HOLD)
        self.upstream_pace_take = conn.register_script(UPSTREAM_PACE_TAKE)
        self.upstream_pace_report = conn.register_script(UPSTREAM_PACE_REPORT)
        self.move_to_front = conn.register_script(MOVE_TO_FRONT)
        self.progress = conn.register_script(PROGRESS)
        self.count_once = conn.register_script(COUNT_ONCE)
        self.stage_leaf = conn.register_script(STAGE_LEAF)
        self.province_ended = conn.register_script(PROVINCE_ENDED)
        self.trim_history = conn.register_script(TRIM_HISTORY)
        self.end_if_running = conn.register_script(END_IF_RUNNING)
        self.note_run = conn.register_script(NOTE_RUN)
        self.claim_due = conn.register_script(CLAIM_DUE)
        self.claim = conn.register_script(CLAIM)
        self.step = conn.register_script(STEP)
        self.release_claims = conn.register_script(RELEASE_CLAIMS)
        self.requeue_orphaned_claims = conn.register_script(REQUEUE_ORPHANED_CLAIMS)
        self.claim_unit = conn.register_script(CLAIM_UNIT)
        self.release_job = conn.register_script(RELEASE_JOB)
        self.publish = conn.register_script(PUBLISH)
        self.renew_claims = conn.register_script(RENEW_CLAIMS)
