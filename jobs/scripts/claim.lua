-- claim: claim up to `limit` jobs from the worker's queues in order (workers.claims), skipping suspended ones (none
-- at all while RQ's global suspension or the worker's pool suspension holds); a job id a blocking wait already
-- moved into the claims list (BLMOVE) is kept, or put back at the front if its queue was suspended meanwhile, or
-- dropped if it is no longer there (its claim lapsed and went back to the queue). The caller reads the jobs'
-- hashes (their keys are known only once the ids are popped).
-- KEYS[1] = RQ's suspension flag (keys.RQ_SUSPENDED)
-- KEYS[2] = suspended queues set (keys.SUSPENDED_QUEUES)
-- KEYS[3] = suspended pools set (keys.SUSPENDED_POOLS)
-- KEYS[4] = claimers zset (keys.CLAIMERS)
-- KEYS[5..] = per queue of ARGV[7..], two: the queue (keys.RQ_QUEUE_PREFIX + name), the worker's claims list on it
-- (keys.claims)
-- ARGV[1] = worker; ARGV[2] = pool; ARGV[3] = limit; ARGV[4] = claim ttl; ARGV[5] = popped queue ('' for none,
-- else one of ARGV[7..]); ARGV[6] = popped id; ARGV[7..] = queue names
-- include: now, claims_prologue
-- Returns {held, {suspended names}, queue, id, queue, id, ...}.
local limit = tonumber(ARGV[3])
local held = held_all(ARGV[2])
local out = {}
local queue, claims = {}, {}
for i = 7, #ARGV do
  queue[ARGV[i]], claims[ARGV[i]] = KEYS[5 + (i - 7) * 2], KEYS[6 + (i - 7) * 2]
end
local popq, popid = ARGV[5], ARGV[6]
if popq ~= '' and not (claims[popq] and redis.call('LPOS', claims[popq], popid)) then
  popq = ''  -- given back meanwhile (this worker was frozen past its claims' lapse): another one may run it
end
if popq ~= '' then
  if held or suspended(popq) then
    redis.call('LREM', claims[popq], 1, popid)
    redis.call('LPUSH', queue[popq], popid)
  else
    out[#out + 1] = popq; out[#out + 1] = popid
  end
end
local stopped = {}
for i = 7, #ARGV do
  local q = ARGV[i]
  if suspended(q) then
    stopped[#stopped + 1] = q
  elseif not held then
    while #out < 2 * limit do
      local id = redis.call('LMOVE', queue[q], claims[q], 'LEFT', 'RIGHT')
      if not id then break end
      out[#out + 1] = q; out[#out + 1] = id
    end
  end
end
if #out > 0 then redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[1]) end
local res = {held and 1 or 0, stopped}
for _, e in ipairs(out) do res[#res + 1] = e end
return res
