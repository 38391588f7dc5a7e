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
-- KEYS[6..] = per queue of the worker (ARGV[4] of them), two: the queue (keys.RQ_QUEUE_PREFIX + name), the
-- worker's claims list on it (keys.claims); then every key of RQ's recorded commands, the ended execution's
-- started registry (RQ's StartedJobRegistry.key) and the ended job's dependents set (RQ's Job.dependents_key),
-- each once, referred to by index (jobs.rqseam.recorded)
-- ARGV[1] = worker; ARGV[2] = pool; ARGV[3] = claim ttl; ARGV[4] = W, the worker's queues
-- ARGV[5] = KEYS index of the ended execution's started registry; ARGV[6] = its member ('' for none)
-- ARGV[7] = KEYS index of the ended job's dependents set (0 for none)
-- ARGV[8] = the next job's queue, its number among the W (0 for none); ARGV[9] = its name; ARGV[10] = next id
-- ARGV[11..] = the ended job's commands, then the next one's start commands: each list a count, then each command
-- as (argument count, command, KEYS index of its key, other arguments...)
-- include: now, claims_prologue
-- Returns {dependents (-1: none asked), started (1/0)}.
-- give_back: every claim of the worker, in order, to the front of its queue.
local function give_back(w)
  for i = 6, 4 + 2 * w, 2 do
    while redis.call('LMOVE', KEYS[i + 1], KEYS[i], 'RIGHT', 'LEFT') do end
  end
end
local function run(pos, skip)
  local n = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, n do
    local k = tonumber(ARGV[pos])
    if not skip then redis.call(ARGV[pos + 1], KEYS[tonumber(ARGV[pos + 2])], unpack(ARGV, pos + 3, pos + k)) end
    pos = pos + k + 1
  end
  return pos
end
local member = ARGV[6]
local stale = member ~= '' and not redis.call('ZSCORE', KEYS[tonumber(ARGV[5])], member)
if stale then redis.call('HINCRBY', KEYS[5], 'stale_writes|result', 1) end
local pos = run(11, stale)
local waiting = -1
local dependents = tonumber(ARGV[7])
if dependents > 0 and not stale then waiting = redis.call('SCARD', KEYS[dependents]) end
local q, id = tonumber(ARGV[8]), ARGV[10]
if q == 0 then return {waiting, 0} end
if held_all(ARGV[2]) or suspended(ARGV[9]) or redis.call('LREM', KEYS[5 + 2 * q], 1, id) == 0 then
  give_back(tonumber(ARGV[4]))
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {waiting, 0}
end
run(pos, false)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[1])
return {waiting, 1}
