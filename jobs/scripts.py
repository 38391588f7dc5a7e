"""The Lua scripts refreshq runs in Redis: each one a read-check-write that must be atomic."""

from __future__ import annotations

import redis

# Move a task record from one of the allowed statuses to another, keeping the indexes in step.
# KEYS: record. ARGV: allowed (comma list), to, updated_at (ISO), now (epoch), prefix, field, value, ...
# Returns "OK", or the current status when the move is not allowed, or false when there is no record.
TRANSITION = """
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
return 'OK'
"""

# The upstream gate (jobs.limits). Both scripts take KEYS: holders zset, slots hash, wants hash, rate zset,
# and start the same way: read Redis' clock (workers on different machines agree on it) and drop the
# holders whose lease lapsed (their work-horse died), with their slots; their requests still in flight
# count against the per-second cap for one more second from now, then stop counting.
_UPSTREAM_PROLOGUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function drop(holder)
  redis.call('ZREM', KEYS[1], holder)
  redis.call('HDEL', KEYS[2], holder)
  redis.call('HDEL', KEYS[3], holder)
  local prefix = holder .. '|'
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '+inf', '+inf')) do
    if string.sub(token, 1, #prefix) == prefix then redis.call('ZADD', KEYS[4], now + 1, token) end
  end
end
for _, holder in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(holder) end
"""

# Lease, renew or (want 0) release a holder's block of in-flight slots.
# ARGV: holder, limit (0 = none), want, bound, lease seconds, answered request tokens...
# `bound` is the most slots the holder may still be using (its cap or more, while a shrink drains): its
# record never drops below it, so the sum of records, which never exceeds the limit, bounds what is in
# flight. Shares are max-min fair over every holder's want (waiting ones included): nobody is granted
# more than the even share of what the others leave while another waits. Returns {grant, fair share}.
UPSTREAM_HOLD = _UPSTREAM_PROLOGUE + """
for i = 6, #ARGV do redis.call('ZADD', KEYS[4], 'XX', now + 1, ARGV[i]) end
local holder, limit, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if want == 0 then
  drop(holder)
  return {0, 0}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), holder)
redis.call('HSET', KEYS[3], holder, want)
if limit == 0 then return {want, want} end
local wants = {}
for _, w in ipairs(redis.call('HVALS', KEYS[3])) do table.insert(wants, tonumber(w)) end
table.sort(wants)
local target, left = want, limit
for i, w in ipairs(wants) do
  local even = left / (#wants - i + 1)
  if w > even then
    target = math.min(want, math.ceil(even))
    break
  end
  left = left - w
end
local others = 0
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  if held[i] ~= holder then others = others + tonumber(held[i + 1]) end
end
local grant = math.max(0, math.min(target, limit - others))
redis.call('HSET', KEYS[2], holder, math.max(grant, tonumber(ARGV[4])))
return {grant, target}
"""

# Admit one request within the per-second cap, and record answered ones.
# ARGV: holder, rps, token of the request to admit ('' for none), answered request tokens...
# A request counts from its admission (before it is sent) until one second after its answer (after the
# upstream saw it), so any one-second window of the upstream's holds at most `rps` of them, whatever the
# delays between here and there. Returns 0 (admitted), the milliseconds until the earliest counted
# request stops counting, -1 (every counted request is still in flight) or -2 (the holder's lease lapsed).
UPSTREAM_RATE = _UPSTREAM_PROLOGUE + """
for i = 4, #ARGV do redis.call('ZADD', KEYS[4], 'XX', now + 1, ARGV[i]) end
if ARGV[3] == '' then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -2 end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if first[2] == 'inf' then return -1 end
  return math.max(1, math.ceil((tonumber(first[2]) - now) * 1000))
end
redis.call('ZADD', KEYS[4], '+inf', ARGV[3])
return 0
"""

# Move a job id from anywhere in a queue's list to its head, if it is still there (not yet dequeued).
# KEYS: queue list. ARGV: job id. Returns 1 when moved.
MOVE_TO_FRONT = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
"""

# Record progress of a running task; progress only ever grows.
# KEYS: record. ARGV: progress, current_step, updated_at, now, eta, prefix.
PROGRESS = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'RUNNING' then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'progress', ARGV[1]) end
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

# Stage one leaf of a province, once, with its checkpoint entry and counters, keeping only the records
# whose id no other leaf of the task staged before (ids are unique by contract; a lying upstream may
# list one under two leaves). Bulk HMGET/HSET in chunks (Lua's unpack is bounded), never one per record.
# KEYS: checkpoint set, stats hash, task id index, conflicts hash, data leaf hash, data leaves hash.
# ARGV: leaf code, leaf JSON, the province's leaves-done and hospitals counters (keys.province_stat),
#       1 if the leaf is a district, max conflict examples, then hospital id, record JSON, ... (ids distinct).
# Returns {kept, conflicts}, or -1 when the leaf was staged already (a re-run writes and counts nothing).
STAGE_LEAF = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return -1 end
local leaf, chunk = ARGV[1], 2000
local kept, conflicts, examples = 0, 0, nil
for first = 7, #ARGV, 2 * chunk do
  local ids = {}
  for i = first, math.min(first + 2 * chunk - 1, #ARGV), 2 do ids[#ids + 1] = ARGV[i] end
  local owners = redis.call('HMGET', KEYS[3], unpack(ids))
  local data, index = {}, {}
  for n, id in ipairs(ids) do
    local owner = owners[n]
    if owner == false or owner == leaf then
      data[#data + 1] = id
      data[#data + 1] = ARGV[first + 2 * n - 1]
      index[#index + 1] = id
      index[#index + 1] = leaf
      kept = kept + 1
    else
      conflicts = conflicts + 1
      if examples == nil then examples = redis.call('HLEN', KEYS[4]) end
      if examples < tonumber(ARGV[6]) and redis.call('HSETNX', KEYS[4], id, owner .. ',' .. leaf) == 1 then
        examples = examples + 1
      end
    end
  end
  if #data > 0 then
    redis.call('HSET', KEYS[5], unpack(data))
    redis.call('HSET', KEYS[3], unpack(index))
  end
end
redis.call('HSET', KEYS[6], leaf, ARGV[2])
redis.call('HINCRBY', KEYS[2], 'leaves_done', 1)
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[2], 'districts_processed', 1) end
if kept > 0 then
  redis.call('HINCRBY', KEYS[2], 'hospitals_found', kept)
  redis.call('HINCRBY', KEYS[2], ARGV[4], kept)
end
if conflicts > 0 then redis.call('HINCRBY', KEYS[2], 'conflicts', conflicts) end
return {kept, conflicts}
"""

# Record how a province's part of a task ended, once; return 1 when every planned province has ended.
# KEYS: ended hash, stats hash. ARGV: province, outcome, published (1/0).
PROVINCE_ENDED = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 and ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'provinces_processed', 1)
end
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

# Claims (workers.claims): a worker moves the jobs it dequeues into a claims list of its own, atomically
# with the check that their queue is not suspended, and starts each one atomically with the same check,
# so a suspended queue gives no worker one more job. Shared KEYS: rq:suspended, suspended queues SET,
# suspended pools SET, claimers ZSET. `give_back` returns every claim of a worker, in order, to the
# front of its queue (ARGV[first..last] are the worker's queue names).
_CLAIMS_PROLOGUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function suspended(q) return redis.call('SISMEMBER', KEYS[2], q) == 1 end
local function held_all(pool)
  return redis.call('EXISTS', KEYS[1]) == 1 or (pool ~= '' and redis.call('SISMEMBER', KEYS[3], pool) == 1)
end
local function give_back(prefix, qprefix, first, last)
  for i = first, last do
    while redis.call('LMOVE', prefix .. ARGV[i], qprefix .. ARGV[i], 'RIGHT', 'LEFT') do end
  end
end
"""

# Claim up to `limit` jobs from the worker's queues in order, skipping suspended ones (none at all while
# RQ's global suspension or the worker's pool suspension holds); a job id already popped by a blocking
# wait (BLPOP, or BLMOVE straight into the claims list) is claimed or put back at the front.
# ARGV: claims prefix, worker, pool, limit, claim ttl, queue prefix, job prefix, popped queue, popped id,
# popped into claims (1/0), queue names... Returns {held, {suspended names}, queue, id, job hash, ...}.
CLAIM = _CLAIMS_PROLOGUE + """
local prefix, qprefix, limit = ARGV[1], ARGV[6], tonumber(ARGV[4])
local held = held_all(ARGV[3])
local out = {}
local popq, popid = ARGV[8], ARGV[9]
if popq ~= '' then
  if held or suspended(popq) then
    if ARGV[10] == '1' then redis.call('LREM', prefix .. popq, 1, popid) end
    redis.call('LPUSH', qprefix .. popq, popid)
  else
    if ARGV[10] ~= '1' then redis.call('RPUSH', prefix .. popq, popid) end
    out[#out + 1] = {popq, popid}
  end
end
local stopped = {}
for i = 11, #ARGV do
  local q = ARGV[i]
  if suspended(q) then
    stopped[#stopped + 1] = q
  elseif not held then
    while #out < limit do
      local id = redis.call('LMOVE', qprefix .. q, prefix .. q, 'LEFT', 'RIGHT')
      if not id then break end
      out[#out + 1] = {q, id}
    end
  end
end
if #out > 0 then redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[2]) end
local res = {held and 1 or 0, stopped}
for _, e in ipairs(out) do
  res[#res + 1] = e[1]; res[#res + 1] = e[2]; res[#res + 1] = redis.call('HGETALL', ARGV[7] .. e[2])
end
return res
"""

# One step of a fast worker: RQ's bookkeeping of the job that ended (commands recorded from RQ's own
# methods, run as they are), the count of its dependents left to enqueue, then the start of the next
# claimed job (RQ's commands again), only if its queue is not suspended and it is still claimed;
# otherwise every claim of the worker goes back to the front of its queue.
# ARGV: claims prefix, worker, pool, claim ttl, queue prefix, W, W queue names, ended-job commands,
# dependents key or '', next queue or '', next id, start commands. Commands: count, then each as
# (argument count, arguments...). Returns {dependents (-1: none asked), started (1/0)}.
STEP = _CLAIMS_PROLOGUE + """
local function run(pos)
  local n = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, n do
    local k = tonumber(ARGV[pos])
    redis.call(unpack(ARGV, pos + 1, pos + k))
    pos = pos + k + 1
  end
  return pos
end
local w = tonumber(ARGV[6])
local pos = run(7 + w)
local waiting = -1
if ARGV[pos] ~= '' then waiting = redis.call('SCARD', ARGV[pos]) end
local q, id = ARGV[pos + 1], ARGV[pos + 2]
if q == '' then return {waiting, 0} end
if held_all(ARGV[3]) or suspended(q) or redis.call('LREM', ARGV[1] .. q, 1, id) == 0 then
  give_back(ARGV[1], ARGV[5], 7, 6 + w)
  redis.call('ZREM', KEYS[4], ARGV[2])
  return {waiting, 0}
end
run(pos + 3)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[2])
return {waiting, 1}
"""

# Every claim of one worker back to the front of its queue (a drain, a stop, a long job).
# KEYS: claimers. ARGV: claims prefix, worker, queue prefix, queue names... Returns how many.
RELEASE_CLAIMS = """
local n = 0
for i = 4, #ARGV do
  while redis.call('LMOVE', ARGV[1] .. ARGV[i], ARGV[3] .. ARGV[i], 'RIGHT', 'LEFT') do n = n + 1 end
end
redis.call('ZREM', KEYS[1], ARGV[2])
return n
"""

# The claims of workers that stopped renewing them (killed, lost), back to the front of their queues.
# KEYS: claimers. ARGV: claims prefix, queue prefix, queue names... Returns how many jobs.
REQUEUE_ORPHANED_CLAIMS = """
local t = redis.call('TIME')
local n = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1000000)) do
  for i = 3, #ARGV do
    while redis.call('LMOVE', ARGV[1] .. worker .. ':' .. ARGV[i], ARGV[2] .. ARGV[i], 'RIGHT', 'LEFT') do n = n + 1 end
  end
  redis.call('ZREM', KEYS[1], worker)
end
return n
"""


class Scripts:
    """The scripts registered on one connection (EVALSHA, falling back to EVAL after a restart)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.transition = conn.register_script(TRANSITION)
        self.start = conn.register_script(START)
        self.upstream_hold = conn.register_script(UPSTREAM_HOLD)
        self.upstream_rate = conn.register_script(UPSTREAM_RATE)
        self.move_to_front = conn.register_script(MOVE_TO_FRONT)
        self.progress = conn.register_script(PROGRESS)
        self.count_once = conn.register_script(COUNT_ONCE)
        self.stage_leaf = conn.register_script(STAGE_LEAF)
        self.province_ended = conn.register_script(PROVINCE_ENDED)
        self.trim_history = conn.register_script(TRIM_HISTORY)
        self.end_if_running = conn.register_script(END_IF_RUNNING)
        self.note_run = conn.register_script(NOTE_RUN)
        self.claim = conn.register_script(CLAIM)
        self.step = conn.register_script(STEP)
        self.release_claims = conn.register_script(RELEASE_CLAIMS)
        self.requeue_orphaned_claims = conn.register_script(REQUEUE_ORPHANED_CLAIMS)
