-- transition: move a task record from one of the allowed statuses to another (jobs.refresh.records), keeping the
-- indexes in step (the status ones, and the owner's per status that the per-user limits count), and record a
-- run's end (jobs.observe.run_ended) when an active task ends. The caller knows the statuses, the task's kind and
-- owner (neither ever changes), so it passes every index key the move may touch.
-- KEYS[1] = the task record (keys.task)
-- KEYS[2] = the task's stats hash (keys.task_stats)
-- KEYS[3] = the task's owners hash, dropped when it ends (keys.task_owners)
-- KEYS[4] = tasks by update (keys.TASKS_BY_UPDATED)
-- KEYS[5..10] = the observe keys of a run's end (jobs.observe.run_ended.run_ended_keys): counters, run-time
-- histogram of the kind, the hour's sums, all-time sums, the kind's run list, outcomes
-- KEYS[11..] = per status of ARGV[1], then ARGV[2]: its index by creation (keys.tasks_with_status), by update
-- (keys.tasks_with_status_by_updated) and, when ARGV[6] names an owner, the owner's
-- (keys.tasks_with_status_of_owner)
-- ARGV[1] = allowed statuses (comma list); ARGV[2] = to; ARGV[3] = updated_at (ISO); ARGV[4] = now (epoch);
-- ARGV[5] = the task's kind; ARGV[6] = its owner ('' for a record without one); ARGV[7..9] = the observe numbers
-- (jobs.observe.run_ended.run_ended_args): hour TTL, histogram bounds, run list length; ARGV[10..] = field,
-- value, ... to set
-- include: run_ended
-- Returns "OK", or the current status when the move is not allowed, or false when there is no record; an error
-- when the record's kind or owner is not the one passed (its keys would be another task's).
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
local per = ARGV[6] ~= '' and 3 or 2
local from, n = nil, 0
for status in string.gmatch(ARGV[1], '[^,]+') do
  n = n + 1
  if status == current and not from then from = 10 + (n - 1) * per end
end
if not from then return current end
local to = 10 + n * per
local kind = redis.call('HGET', KEYS[1], 'kind') or 'full'
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if kind ~= ARGV[5] or owner ~= ARGV[6] then return redis.error_reply('transition: kind or owner of ' .. KEYS[1]) end
local id = redis.call('HGET', KEYS[1], 'task_id')
local created = redis.call('HGET', KEYS[1], 'created_ts')
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
for i = 10, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', KEYS[from + 1], id)
redis.call('ZADD', KEYS[to + 1], created, id)
redis.call('ZREM', KEYS[from + 2], id)
redis.call('ZADD', KEYS[to + 2], ARGV[4], id)
redis.call('ZADD', KEYS[4], ARGV[4], id)
local active = current == 'PENDING' or current == 'RUNNING'
if ARGV[2] ~= 'PENDING' and ARGV[2] ~= 'RUNNING' then
  -- an ended task's work belongs to no execution any more (jobs.refresh.fence)
  redis.call('DEL', KEYS[3])
end
if ARGV[2] == 'PENDING' and not active then
  -- a resume: its run is timed from its own start, its queue wait from now
  redis.call('HDEL', KEYS[1], 'run_started_ts', 'queue_wait_seconds', 'run_hospitals_start')
  redis.call('HSET', KEYS[1], 'queued_ts', ARGV[4])
elseif active and (ARGV[2] == 'SUCCEEDED' or ARGV[2] == 'FAILED' or ARGV[2] == 'CANCELLED') then
  run_ended(KEYS[1], KEYS[2], id, ARGV[2], tonumber(ARGV[4]), {
    counters = KEYS[5], runtime = KEYS[6], hour = KEYS[7], total = KEYS[8], runs = KEYS[9], outcomes = KEYS[10],
    hour_ttl = ARGV[7], bounds = ARGV[8], length = ARGV[9]})
end
if owner ~= '' then
  redis.call('ZREM', KEYS[from + 3], id)
  redis.call('ZADD', KEYS[to + 3], created, id)
end
return 'OK'
