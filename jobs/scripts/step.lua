-- step: one step of a fast worker (workers.fast): RQ's bookkeeping of the job that ended (commands recorded from
-- RQ's own methods, run as they are), the count of its dependents left to enqueue, then the start of the next
-- claimed job (RQ's commands again), only if its queue is not suspended and it is still claimed; otherwise every
-- claim of the worker goes back to the front of its queue. The ended job's commands run only while its execution
-- is still registered as started: one the scheduler declared abandoned (its worker paused past its heartbeats)
-- may be running elsewhere now (workers.takeover).
-- KEYS[1] = RQ's suspension flag (keys.RQ_SUSPENDED)
-- KEYS[2] = suspended queues set (keys.SUSPENDED_QUEUES)
-- KEYS[3] = suspended pools set (keys.SUSPENDED_POOLS)
-- KEYS[4] = claimers zset (keys.CLAIMERS)
-- KEYS[5] = metric counters hash (keys.METRIC_COUNTERS)
-- UNDECLARED: the keys of RQ's recorded commands, the started registry and the dependents set (full names in
-- ARGV), the queues and claims lists (from prefixes in ARGV). Left for the worker seam's rework (issue 21).
-- ARGV[1] = claims prefix; ARGV[2] = worker; ARGV[3] = pool; ARGV[4] = claim ttl; ARGV[5] = queue prefix;
-- ARGV[6] = W; ARGV[7..] = W queue names, then the ended execution's started registry and member ('' for none),
-- ended-job commands, dependents key or '', next queue or '', next id, start commands. Commands: count, then each
-- as (argument count, arguments...).
-- include: now, claims_prologue
-- Returns {dependents (-1: none asked), started (1/0)}.
-- give_back: every claim of the worker, in order, to the front of its queue (ARGV[first..last]: its queue names).
local function give_back(prefix, qprefix, first, last)
  for i = first, last do
    while redis.call('LMOVE', prefix .. ARGV[i], qprefix .. ARGV[i], 'RIGHT', 'LEFT') do end
  end
end
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
if stale then redis.call('HINCRBY', KEYS[5], 'stale_writes|result', 1) end
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
