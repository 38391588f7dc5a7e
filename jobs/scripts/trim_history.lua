-- trim_history: a named task's history (jobs.named.history): drop records started before the cutoff, then all
-- but the newest `limit`, keeping the index and the records in step.
-- KEYS[1] = index zset (keys.history)
-- KEYS[2] = records hash (keys.history_entries)
-- ARGV[1] = cutoff (epoch); ARGV[2] = limit
-- Returns how many records were dropped.
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local removed = 0
for i = 1, #old do
  redis.call('ZREM', KEYS[1], old[i]); redis.call('HDEL', KEYS[2], old[i]); removed = removed + 1
end
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if extra > 0 then
  local ids = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  for i = 1, #ids do
    redis.call('ZREM', KEYS[1], ids[i]); redis.call('HDEL', KEYS[2], ids[i]); removed = removed + 1
  end
end
return removed
