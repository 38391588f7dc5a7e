-- Fragment (after `now`): the guards of the workers' claims (workers.claims). A worker moves the jobs it dequeues
-- into a claims list of its own, atomically with the check that their queue is not suspended, and starts each
-- one atomically with the same check, so a suspended queue gives no worker one more job. The including script
-- takes as KEYS[1..4]: RQ's suspension flag (keys.RQ_SUSPENDED), the suspended queues set
-- (keys.SUSPENDED_QUEUES), the suspended pools set (keys.SUSPENDED_POOLS), the claimers zset (keys.CLAIMERS).
local function suspended(q) return redis.call('SISMEMBER', KEYS[2], q) == 1 end
local function held_all(pool)
  return redis.call('EXISTS', KEYS[1]) == 1 or (pool ~= '' and redis.call('SISMEMBER', KEYS[3], pool) == 1)
end
