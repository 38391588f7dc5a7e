-- claim_due: claim the alert notices due for delivery (jobs.observe.delivery): each is pushed a lease ahead, so two
-- deliverers never take the same one at once, and recorded with the scheduler lock's token of the claimer. A
-- claim whose token is not the lock's now was made by a scheduler that is no longer the active one (killed, or
-- stopped mid-delivery): it is due at once, not when its lease (minutes, sized for the slowest delivery) lapses.
-- KEYS[1] = outbox zset (keys.ALERT_OUTBOX)
-- KEYS[2] = claims hash (keys.ALERT_CLAIMS)
-- KEYS[3] = scheduler lock (keys.SCHEDULER_LOCK)
-- ARGV[1] = now; ARGV[2] = lease seconds; ARGV[3] = most notices
-- Returns their ids, oldest due first, then those taken over.
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
local owner = redis.call('GET', KEYS[3]) or ''
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local taken = {}
for _, id in ipairs(due) do taken[id] = true end
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local id = held[i]
  if not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('HDEL', KEYS[2], id)
  elseif held[i + 1] ~= owner and not taken[id] and #due < limit then
    taken[id] = true
    table.insert(due, id)
  end
end
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), id)
  redis.call('HSET', KEYS[2], id, owner)
end
return due
