-- release_job: a job declared abandoned (its worker missed its heartbeats: dead, or only paused) owns nothing any
-- more (jobs.refresh.fence): drop every claim of any execution of it.
-- KEYS[1] = the task's owners hash (keys.task_owners)
-- ARGV[1] = "<job id>:"
-- Returns how many were dropped.
local held, dropped = redis.call('HGETALL', KEYS[1]), 0
for i = 1, #held, 2 do
  if string.sub(held[i + 1], 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], held[i]); dropped = dropped + 1
  end
end
return dropped
