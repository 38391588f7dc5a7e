-- start: start (or keep running) a task within the global limit on running tasks, first come first served
-- (jobs.limits.start_task). The caller knows the task's owner (it never changes) and passes its indexes.
-- KEYS[1] = the task record (keys.task)
-- KEYS[2] = tasks waiting for a slot (keys.TASKS_WAITING)
-- KEYS[3] = the task's stats hash (keys.task_stats)
-- KEYS[4] = tasks by update (keys.TASKS_BY_UPDATED)
-- KEYS[5] = PENDING tasks by creation (keys.tasks_with_status), KEYS[6] = by update (keys.tasks_with_status_by_updated)
-- KEYS[7] = RUNNING tasks by creation (keys.tasks_with_status), KEYS[8] = by update (keys.tasks_with_status_by_updated)
-- KEYS[9..10] = when ARGV[4] names an owner, its PENDING and RUNNING indexes (keys.tasks_with_status_of_owner)
-- ARGV[1] = limit; ARGV[2] = updated_at; ARGV[3] = now; ARGV[4] = the task's owner ('' for a record without one);
-- ARGV[5..] = field, value, ... to set
-- Returns "OK" (running), "WAIT" (no slot yet: queued in order), or the status when it cannot start; an error when
-- the record's owner is not the one passed.
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
if current == 'RUNNING' then return 'OK' end
if current ~= 'PENDING' then return current end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if owner ~= ARGV[4] then return redis.error_reply('start: owner of ' .. KEYS[1]) end
local id = redis.call('HGET', KEYS[1], 'task_id')
local created = redis.call('HGET', KEYS[1], 'created_ts')
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[1]) or (head and head ~= id) then
  redis.call('ZADD', KEYS[2], 'NX', created, id)
  return 'WAIT'
end
redis.call('ZREM', KEYS[2], id)
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'updated_at', ARGV[2])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[6], id)
redis.call('ZADD', KEYS[7], created, id)
redis.call('ZADD', KEYS[8], ARGV[3], id)
redis.call('ZADD', KEYS[4], ARGV[3], id)
if redis.call('HEXISTS', KEYS[1], 'run_started_ts') == 0 then
  -- the run's first start: its queue wait (from creation, or from its resume) and its records so far
  local queued = tonumber(redis.call('HGET', KEYS[1], 'queued_ts') or created)
  local found = redis.call('HGET', KEYS[3], 'hospitals_found') or '0'
  redis.call('HSET', KEYS[1], 'run_started_ts', ARGV[3], 'queue_wait_seconds', math.max(0, tonumber(ARGV[3]) - queued),
             'run_hospitals_start', found)
end
if owner ~= '' then
  redis.call('ZREM', KEYS[9], id)
  redis.call('ZADD', KEYS[10], created, id)
end
return 'OK'
