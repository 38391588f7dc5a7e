"""The Lua scripts of the workers' claims (workers.claims, workers.fast, jobs.duties.claims): part of
jobs.scripts, which registers them, in a file of their own for size."""

from __future__ import annotations

from jobs import keys
from jobs.keys import BELL_PREFIX
from jobs.queues import BELL_TOKENS

# A token on the bell of queue q (jobs.queues.ring): jobs given back wake a waiting worker at once.
_RING = f"""
local function ring(q)
  redis.call('RPUSH', '{BELL_PREFIX}' .. q, 1)
  redis.call('LTRIM', '{BELL_PREFIX}' .. q, -{BELL_TOKENS}, -1)
end
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
# RQ's global suspension or the worker's pool suspension holds); a job id a blocking wait already moved
# into the claims list (BLMOVE) is kept, or put back at the front if its queue was suspended meanwhile,
# or dropped if it is no longer there (its claim lapsed and went back to the queue).
# ARGV: claims prefix, worker, pool, limit, claim ttl, queue prefix, job prefix, popped queue, popped id,
# queue names... Returns {held, {suspended names}, queue, id, job hash, ...}.
CLAIM = _CLAIMS_PROLOGUE + """
local prefix, qprefix, limit = ARGV[1], ARGV[6], tonumber(ARGV[4])
local held = held_all(ARGV[3])
local out = {}
local popq, popid = ARGV[8], ARGV[9]
if popq ~= '' and not redis.call('LPOS', prefix .. popq, popid) then
  popq = ''  -- given back meanwhile (this worker was frozen past its claims' lapse): another one may run it
end
if popq ~= '' then
  if held or suspended(popq) then
    redis.call('LREM', prefix .. popq, 1, popid)
    redis.call('LPUSH', qprefix .. popq, popid)
  else
    out[#out + 1] = {popq, popid}
  end
end
local stopped = {}
for i = 10, #ARGV do
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
# The ended job's commands run only while its execution is still registered as started: one the scheduler
# declared abandoned (its worker paused past its heartbeats) may be running elsewhere now (workers.takeover).
# ARGV: claims prefix, worker, pool, claim ttl, queue prefix, W, W queue names, the ended execution's started
# registry and member ('' for none), ended-job commands, dependents key or '', next queue or '', next id, start
# commands. Commands: count, then each as (argument count, arguments...). Returns {dependents (-1: none
# asked), started (1/0)}.
STEP = _CLAIMS_PROLOGUE + """
local function run(pos, skip)
  local n = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, n do
    local k = tonumber(ARGV[pos])
    if not skip then redis.call(unpack(ARGV, pos + 1, pos + k)) end
    pos = pos + k + 1
  end
  return pos
end
local w = tonumber(ARGV[6])
local member = ARGV[8 + w]
local stale = member ~= '' and not redis.call('ZSCORE', ARGV[7 + w], member)
if stale then redis.call('HINCRBY', '""" + keys.METRIC_COUNTERS + """', 'stale_writes|result', 1) end
local pos = run(9 + w, stale)
local waiting = -1
if ARGV[pos] ~= '' and not stale then waiting = redis.call('SCARD', ARGV[pos]) end
local q, id = ARGV[pos + 1], ARGV[pos + 2]
if q == '' then return {waiting, 0} end
if held_all(ARGV[3]) or suspended(q) or redis.call('LREM', ARGV[1] .. q, 1, id) == 0 then
  give_back(ARGV[1], ARGV[5], 7, 6 + w)
  redis.call('ZREM', KEYS[4], ARGV[2])
  return {waiting, 0}
end
run(pos + 3, false)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[2])
return {waiting, 1}
"""

# A worker about to wait for a job (BLMOVE straight into its claims list) renews its claims first: if it dies,
# freezes or loses its machine while the server still holds its wait, a job the wait takes is given back by
# jobs.duties.claims once the renewal lapses, as any claim of a dead worker. KEYS: claimers. ARGV: worker, ttl.
RENEW_CLAIMS = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2]), ARGV[1])
"""

# Every claim of one worker back to the front of its queue (a drain, a stop, a long job).
# KEYS: claimers. ARGV: claims prefix, worker, queue prefix, queue names... Returns how many.
RELEASE_CLAIMS = _RING + """
local n = 0
for i = 4, #ARGV do
  local moved = 0
  while redis.call('LMOVE', ARGV[1] .. ARGV[i], ARGV[3] .. ARGV[i], 'RIGHT', 'LEFT') do moved = moved + 1 end
  if moved > 0 then ring(ARGV[i]) end
  n = n + moved
end
redis.call('ZREM', KEYS[1], ARGV[2])
return n
"""

# The claims of workers that stopped renewing them (killed, lost), back to the front of their queues.
# KEYS: claimers. ARGV: claims prefix, queue prefix, queue names... Returns how many jobs.
REQUEUE_ORPHANED_CLAIMS = _RING + """
local t = redis.call('TIME')
local n = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1000000)) do
  for i = 3, #ARGV do
    local moved = 0
    while redis.call('LMOVE', ARGV[1] .. worker .. ':' .. ARGV[i], ARGV[2] .. ARGV[i], 'RIGHT', 'LEFT') do
      moved = moved + 1
    end
    if moved > 0 then ring(ARGV[i]) end
    n = n + moved
  end
  redis.call('ZREM', KEYS[1], worker)
end
return n
"""
