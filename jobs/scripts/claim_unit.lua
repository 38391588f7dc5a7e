-- claim_unit: an execution claims a unit of a task's work (jobs.refresh.fence), taking it over from any earlier
-- owner, if the task is still PENDING or RUNNING and the execution is still registered as started (a paused
-- work-horse declared abandoned meanwhile claims nothing: its job may run elsewhere already).
-- KEYS[1] = the task's owners hash (keys.task_owners)
-- KEYS[2] = the task record (keys.task)
-- KEYS[3] = the job's started registry (RQ's, or the worker's execution registry)
-- KEYS[4] = metric counters hash (keys.METRIC_COUNTERS)
-- ARGV[1] = unit; ARGV[2] = token; ARGV[3] = the execution's member in the registry ('' when the job does not
-- run under refreshq's worker: no registry check)
-- Returns 'OK', or why not: 'ENDED' (the task is not active), 'ABANDONED'.
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'PENDING' and status ~= 'RUNNING' then return 'ENDED' end
if ARGV[3] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[3], ARGV[3])
  if not expiry or tonumber(expiry) < tonumber(redis.call('TIME')[1]) then
    redis.call('HINCRBY', KEYS[4], 'stale_writes|claim', 1)
    return 'ABANDONED'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'OK'
