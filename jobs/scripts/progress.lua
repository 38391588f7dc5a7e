-- progress: record progress of a running task (jobs.refresh.progress); progress only ever grows, and
-- `progress_moved_ts` says when it last did (the stalled flag: REFRESHQ_STALL_SECONDS).
-- KEYS[1] = the task record (keys.task)
-- KEYS[2] = the task's owners hash, the fence (keys.task_owners)
-- KEYS[3] = metric counters hash (keys.METRIC_COUNTERS)
-- KEYS[4] = tasks by update (keys.TASKS_BY_UPDATED)
-- KEYS[5] = running tasks by update (keys.tasks_with_status_by_updated("RUNNING"))
-- ARGV[1] = progress; ARGV[2] = current_step; ARGV[3] = updated_at; ARGV[4] = now; ARGV[5] = eta; ARGV[6] = the
-- fence's unit; ARGV[7] = its token
-- include: stale_check
-- Returns 1 when written, 0 when the task is not running, 'STALE' when refused.
if stale(KEYS[2], KEYS[3], ARGV[6], ARGV[7], 'progress') then return 'STALE' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'RUNNING' then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0')
-- progress_moved_ts: when it last grew (the health rule on stalled tasks reads it)
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'progress_moved_ts', ARGV[4]) end
redis.call('HSET', KEYS[1], 'current_step', ARGV[2], 'updated_at', ARGV[3], 'eta_seconds', ARGV[5])
local id = redis.call('HGET', KEYS[1], 'task_id')
redis.call('ZADD', KEYS[4], ARGV[4], id)
redis.call('ZADD', KEYS[5], ARGV[4], id)
return 1
