-- release_claims: every claim of one worker back to the front of its queue, in order (workers.claims: a drain, a
-- stop, a long job).
-- KEYS[1] = claimers zset (keys.CLAIMERS)
-- KEYS[2..] = per queue, three: the worker's claims list (keys.claims), the queue (keys.RQ_QUEUE_PREFIX + name),
-- its bell (keys.bell)
-- ARGV[1] = worker; ARGV[2] = bell tokens kept (jobs.queues.BELL_TOKENS)
-- include: ring
-- Returns how many jobs went back.
local n = 0
for i = 2, #KEYS, 3 do
  local moved = 0
  while redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'RIGHT', 'LEFT') do moved = moved + 1 end
  if moved > 0 then ring(KEYS[i + 2], ARGV[2]) end
  n = n + moved
end
redis.call('ZREM', KEYS[1], ARGV[1])
return n
