"""The Lua scripts of the upstream gate (jobs.limits): part of jobs.scripts, which registers them, in a file of
their own for size."""

from __future__ import annotations

# The upstream gate (jobs.limits). Both scripts take KEYS: holders zset, slots hash, wants hash, rate zset,
# and start the same way: read Redis' clock (workers on different machines agree on it) and drop the
# holders whose lease lapsed (their work-horse died), with their slots; their requests still in flight
# count against the per-second cap for one more second from now, then stop counting.
_UPSTREAM_PROLOGUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function drop(holder)
  redis.call('ZREM', KEYS[1], holder)
  redis.call('HDEL', KEYS[2], holder)
  redis.call('HDEL', KEYS[3], holder)
  local prefix = holder .. '|'
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '+inf', '+inf')) do
    if string.sub(token, 1, #prefix) == prefix then redis.call('ZADD', KEYS[4], now + 1, token) end
  end
end
for _, holder in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(holder) end
"""

# Lease, renew or (want 0) release a holder's block of in-flight slots.
# ARGV: holder, limit (0 = none), want, bound, lease seconds, answered request tokens...
# `bound` is the most slots the holder may still be using (its cap or more, while a shrink drains): its
# record never drops below it, so the sum of records, which never exceeds the limit, bounds what is in
# flight. Shares are max-min fair over every holder's want (waiting ones included): nobody is granted
# more than the even share of what the others leave while another waits. Returns {grant, fair share}.
UPSTREAM_HOLD = _UPSTREAM_PROLOGUE + """
for i = 6, #ARGV do redis.call('ZADD', KEYS[4], 'XX', now + 1, ARGV[i]) end
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
"""

# Admit one request within the per-second cap, and record answered ones.
# ARGV: holder, rps, token of the request to admit ('' for none), answered request tokens...
# A request counts from its admission (before it is sent) until one second after its answer (after the
# upstream saw it), so any one-second window of the upstream's holds at most `rps` of them, whatever the
# delays between here and there. Returns 0 (admitted), the milliseconds until the earliest counted
# request stops counting, -1 (every counted request is still in flight) or -2 (the holder's lease lapsed).
UPSTREAM_RATE = _UPSTREAM_PROLOGUE + """
for i = 4, #ARGV do redis.call('ZADD', KEYS[4], 'XX', now + 1, ARGV[i]) end
if ARGV[3] == '' then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -2 end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if first[2] == 'inf' then return -1 end
  return math.max(1, math.ceil((tonumber(first[2]) - now) * 1000))
end
redis.call('ZADD', KEYS[4], '+inf', ARGV[3])
return 0
"""
