"""The Lua of fencing (jobs.refresh.fence) and of publishing a province: part of jobs.scripts, which registers
them, in a file of their own for size.

A job execution owns a unit of a task's work ("plan", or a province's code) while the task's owners hash
(keys.task_owners) maps the unit to its token. Every script that writes for an execution takes the hash as a
key and the unit and token as arguments, and starts with STALE_CHECK: a refused write is counted under
`stale_writes|<write>` and changes nothing. An empty token is a write made by no execution (an operator's
cancel, the sweeper burying a job): it is not fenced.
"""

from __future__ import annotations

from jobs import keys

# stale(owners, unit, token, write): true (and counted) when `token` no longer owns `unit`.
STALE_CHECK = """
local function stale(owners, unit, token, write)
  if token == '' or redis.call('HGET', owners, unit) == token then return false end
  redis.call('HINCRBY', '""" + keys.METRIC_COUNTERS + """', 'stale_writes|' .. write, 1)
  return true
end
"""

# An execution claims a unit of a task's work, taking it over from any earlier owner, if the task is still
# PENDING or RUNNING and the execution is still registered as started (a paused work-horse declared abandoned
# meanwhile claims nothing: its job may run elsewhere already).
# KEYS: owners hash, task record, the job's started registry. ARGV: unit, token, the execution's member in
# the registry ('' when the job does not run under refreshq's worker: no registry check).
# Returns 'OK', or why not: 'ENDED' (the task is not active), 'ABANDONED'.
CLAIM = """
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'PENDING' and status ~= 'RUNNING' then return 'ENDED' end
if ARGV[3] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[3], ARGV[3])
  if not expiry or tonumber(expiry) < tonumber(redis.call('TIME')[1]) then
    redis.call('HINCRBY', '""" + keys.METRIC_COUNTERS + """', 'stale_writes|claim', 1)
    return 'ABANDONED'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'OK'
"""

# A job declared abandoned (its worker missed its heartbeats: dead, or only paused) owns nothing any more:
# drop every claim of any execution of it. KEYS: owners hash. ARGV: "<job id>:". Returns how many were dropped.
RELEASE_JOB = """
local held, dropped = redis.call('HGETALL', KEYS[1]), 0
for i = 1, #held, 2 do
  if string.sub(held[i + 1], 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], held[i]); dropped = dropped + 1
  end
end
return dropped
"""

# Publish a staged version of a province: its pointer and meta switch in one step, every key of the new version
# loses any expiry (a version replaced once and published again must not expire under readers), and the
# version it replaces expires after the grace period. Refused when the execution no longer owns the province
# (STALE), when its task is no longer RUNNING or was asked to stop (ENDED), and when the version published now
# belongs to a task created later (SUPERSEDED): the pointer never moves backwards. The caller read the
# current version and both versions' leaf codes; if the pointer moved since, it reads again (MOVED).
# KEYS: owners, task record, task cancel flag, published, published meta, published order, new leaves hash,
#       new sizes hash, old leaves hash, old sizes hash, then the new version's leaf keys, then the old's.
# ARGV: unit, token, province, version, the version read as published ('' for none), how many new leaf keys,
#       meta JSON, grace seconds, the version's order ("<created_ts> <task id>").
PUBLISH = STALE_CHECK + """
if stale(KEYS[1], ARGV[1], ARGV[2], 'publish') then return 'STALE' end
if redis.call('HGET', KEYS[2], 'status') ~= 'RUNNING' or redis.call('EXISTS', KEYS[3]) == 1 then return 'ENDED' end
local province, version, seen = ARGV[3], ARGV[4], ARGV[5]
if (redis.call('HGET', KEYS[4], province) or '') ~= seen then return 'MOVED' end
local function order_of(text)
  local ts, id = string.match(text or '', '^(%S+) (.*)$')
  return tonumber(ts), id
end
if seen ~= '' and seen ~= version then
  local old_ts, old_id = order_of(redis.call('HGET', KEYS[6], province))
  local new_ts, new_id = order_of(ARGV[9])
  if old_ts and new_ts and (old_ts > new_ts or (old_ts == new_ts and old_id > new_id)) then return 'SUPERSEDED' end
end
redis.call('HSET', KEYS[4], province, version)
redis.call('HSET', KEYS[5], province, ARGV[7])
redis.call('HSET', KEYS[6], province, ARGV[9])
local new_leaves = tonumber(ARGV[6])
redis.call('PERSIST', KEYS[7]); redis.call('PERSIST', KEYS[8])
for i = 11, 10 + new_leaves do redis.call('PERSIST', KEYS[i]) end
if seen ~= '' and seen ~= version then
  local grace = tonumber(ARGV[8])
  redis.call('EXPIRE', KEYS[9], grace); redis.call('EXPIRE', KEYS[10], grace)
  for i = 11 + new_leaves, #KEYS do redis.call('EXPIRE', KEYS[i], grace) end
end
return 'OK'
"""
