-- requeue_orphaned_claims: the claims of a worker that stopped renewing them (killed, lost) back to the front of
-- their queues (jobs.duties.claims), if its claims are still lapsed (Redis' clock): the caller read which
-- workers' claims had lapsed, and one may have renewed them since.
-- KEYS[1] = claimers zset (keys.CLAIMERS)
-- KEYS[2..] = per queue, three: the worker's claims list (keys.claims), the queue (keys.RQ_QUEUE_PREFIX + name),
-- its bell (keys.bell)
-- ARGV[1] = worker; ARGV[2] = bell tokens kept (jobs.queues.BELL_TOKENS)
-- include: now, ring, give_back
-- Returns how many jobs went back (0 when the worker's claims are alive, or gone).
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) > now then return 0 end
return give_back()
