-- release_claims: every claim of one worker back to the front of its queue, in order (workers.claims: a drain, a
-- stop, a long job).
-- KEYS[1] = claimers zset (keys.CLAIMERS)
-- KEYS[2..] = per queue, three: the worker's claims list (keys.claims), the queue (keys.RQ_QUEUE_PREFIX + name),
-- its bell (keys.bell)
-- ARGV[1] = worker; ARGV[2] = bell tokens kept (jobs.queues.BELL_TOKENS)
-- include: ring, give_back
-- Returns how many jobs went back.
return give_back()
