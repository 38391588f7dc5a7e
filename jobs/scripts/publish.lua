-- publish: publish a staged version of a province (jobs.refresh.published.publish): its pointer and meta switch in
-- one step, every key of the new version loses any expiry (a version replaced once and published again must not
-- expire under readers), and the version it replaces expires after the grace period. Refused when the execution
-- no longer owns the province (STALE), when its task is no longer RUNNING or was asked to stop (ENDED), and when
-- the version published now belongs to a task created later (SUPERSEDED): the pointer never moves backwards. The
-- caller read the current version and both versions' leaf codes; if the pointer moved since, it reads again
-- (MOVED).
-- KEYS[1] = the task's owners hash (keys.task_owners)
-- KEYS[2] = the task record (keys.task)
-- KEYS[3] = the task's cancel flag (keys.task_cancel)
-- KEYS[4] = published (keys.PUBLISHED)
-- KEYS[5] = published meta (keys.PUBLISHED_META)
-- KEYS[6] = published order (keys.PUBLISHED_ORDER)
-- KEYS[7] = the new version's leaves hash (keys.data_leaves)
-- KEYS[8] = the new version's sizes hash (keys.data_sizes)
-- KEYS[9] = the old version's leaves hash (keys.data_leaves)
-- KEYS[10] = the old version's sizes hash (keys.data_sizes)
-- KEYS[11] = metric counters hash (keys.METRIC_COUNTERS)
-- KEYS[12..] = the new version's leaf keys (ARGV[6] of them), then the old's (keys.data_leaf)
-- ARGV[1] = fence unit; ARGV[2] = token; ARGV[3] = province; ARGV[4] = version; ARGV[5] = the version read as
-- published ('' for none); ARGV[6] = how many new leaf keys; ARGV[7] = meta JSON; ARGV[8] = grace seconds;
-- ARGV[9] = the version's order ("<created_ts> <task id>")
-- include: stale_check
-- Returns 'OK', 'STALE', 'ENDED', 'MOVED' or 'SUPERSEDED'.
if stale(KEYS[1], KEYS[11], ARGV[1], ARGV[2], 'publish') then return 'STALE' end
if redis.call('HGET', KEYS[2], 'status') ~= 'RUNNING' or redis.call('EXISTS', KEYS[3]) == 1 then return 'ENDED' end
local province, version, seen = ARGV[3], ARGV[4], ARGV[5]
if (redis.call('HGET', KEYS[4], province) or '') ~= seen then return 'MOVED' end
local function order_of(text)
  local ts, id = string.match(text or '', '^(%S+) (.*)$')
  return tonumber(ts), id
end
if seen ~= '' and seen ~= version then
  local old_ts, old_id = order_of(redis.call('HGET', KEYS[6], province))
  local new_ts, new_id = order_of(ARGV[9])
  if old_ts and new_ts and (old_ts > new_ts or (old_ts == new_ts and old_id > new_id)) then return 'SUPERSEDED' end
end
redis.call('HSET', KEYS[4], province, version)
redis.call('HSET', KEYS[5], province, ARGV[7])
redis.call('HSET', KEYS[6], province, ARGV[9])
local new_leaves = tonumber(ARGV[6])
redis.call('PERSIST', KEYS[7]); redis.call('PERSIST', KEYS[8])
for i = 12, 11 + new_leaves do redis.call('PERSIST', KEYS[i]) end
if seen ~= '' and seen ~= version then
  local grace = tonumber(ARGV[8])
  redis.call('EXPIRE', KEYS[9], grace); redis.call('EXPIRE', KEYS[10], grace)
  for i = 12 + new_leaves, #KEYS do redis.call('EXPIRE', KEYS[i], grace) end
end
return 'OK'
