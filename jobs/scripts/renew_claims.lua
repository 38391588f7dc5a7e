-- renew_claims: a worker about to wait for a job (BLMOVE straight into its claims list) renews its claims first
-- (workers.claims): if it dies, freezes or loses its machine while the server still holds its wait, a job the
-- wait takes is given back by jobs.duties.claims once the renewal lapses, as any claim of a dead worker.
-- KEYS[1] = claimers zset (keys.CLAIMERS)
-- ARGV[1] = worker; ARGV[2] = ttl seconds
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2]), ARGV[1])
