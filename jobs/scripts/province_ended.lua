-- province_ended: record how a province's part of a task ended, once, and end every claim on it (no execution
-- writes for an ended province; jobs.refresh.finish).
-- KEYS[1] = ended hash (keys.task_provinces_ended)
-- KEYS[2] = stats hash (keys.task_stats)
-- KEYS[3] = the task's owners hash (keys.task_owners)
-- KEYS[4] = metric counters hash (keys.METRIC_COUNTERS)
-- ARGV[1] = province; ARGV[2] = outcome; ARGV[3] = published (1/0); ARGV[4] = fence unit; ARGV[5] = token
-- include: stale_check
-- Returns 1 when every planned province has ended, 'STALE' when the execution recording it no longer owns its
-- unit (the province, or the plan for a province the plan job refused).
if stale(KEYS[3], KEYS[4], ARGV[4], ARGV[5], 'end') then return 'STALE' end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 and ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[2], 'provinces_processed', 1)
end
redis.call('HDEL', KEYS[3], ARGV[1])
local total = tonumber(redis.call('HGET', KEYS[2], 'provinces_total') or '0')
if redis.call('HLEN', KEYS[1]) >= total then return 1 end
return 0
