-- upstream_hold: lease, renew or (want 0) release a holder's block of in-flight slots (jobs.limits).
-- KEYS[1] = holders zset, holder -> lease expiry (keys.UPSTREAM_HOLDERS)
-- KEYS[2] = slots hash, holder -> slots held (keys.UPSTREAM_SLOTS)
-- KEYS[3] = wants hash, holder -> slots asked for (keys.UPSTREAM_WANTS)
-- ARGV[1] = holder; ARGV[2] = limit (0 = none); ARGV[3] = want; ARGV[4] = bound; ARGV[5] = lease seconds
-- include: now
-- Holders whose lease lapsed (their work-horse died) are dropped first, with their slots.
-- `bound` is the most slots the holder may still be using (its cap or more, while a shrink drains): its
-- record never drops below it, so the sum of records, which never exceeds the limit, bounds what is in
-- flight. Shares are max-min fair over every holder's want (waiting ones included): nobody is granted
-- more than the even share of what the others leave while another waits. Returns {grant, fair share}.
local function drop(holder)
  redis.call('ZREM', KEYS[1], holder)
  redis.call('HDEL', KEYS[2], holder)
  redis.call('HDEL', KEYS[3], holder)
end
for _, holder in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(holder) end
local holder, limit, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if want == 0 then
  drop(holder)
  return {0, 0}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), holder)
redis.call('HSET', KEYS[3], holder, want)
if limit == 0 then return {want, want} end
local wants = {}
for _, w in ipairs(redis.call('HVALS', KEYS[3])) do table.insert(wants, tonumber(w)) end
table.sort(wants)
local target, left = want, limit
for i, w in ipairs(wants) do
  local even = left / (#wants - i + 1)
  if w > even then
    target = math.min(want, math.ceil(even))
    break
  end
  left = left - w
end
local others = 0
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  if held[i] ~= holder then others = others + tonumber(held[i + 1]) end
end
local grant = math.max(0, math.min(target, limit - others))
redis.call('HSET', KEYS[2], holder, math.max(grant, tonumber(ARGV[4])))
return {grant, target}
