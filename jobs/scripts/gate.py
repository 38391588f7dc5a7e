"""The Lua scripts of the upstream gate (jobs.limits: in-flight slots; jobs.pacing: requests per second): part of
jobs.scripts, which registers them, in a file of their own for size."""

from __future__ import annotations

# How the learned rate moves (REFRESHQ_UPSTREAM_RPS=auto; jobs.pacing explains the design). After a throttling
# answer the rate drops to BACK_OFF of what was being sent (the *ceiling*); below NEAR of the ceiling it grows
# back by FAST per second, then creeps up by SLOW per second (a limit found is approached slowly: every
# throttling answer costs a pause), and once ABOVE the ceiling with nothing refused, by FAST_ABOVE per second
# (the limit was raised: found again within seconds). The first ceiling, the rate sent when nothing paced it
# yet, is a rough count (bursts of requests in flight): from it the rate drops to FIRST_BACK_OFF and grows by
# PROBE per second, until the next throttling answer gives a ceiling measured while paced. It grows only
# while requests wait for it, and never drops below MIN_RATE.
BACK_OFF = 0.85
FIRST_BACK_OFF = 0.7
NEAR = 0.95
FAST = 0.5
SLOW = 0.003
PROBE = 0.25
ABOVE = 1.1
FAST_ABOVE = 0.25
MIN_STEP = 0.01  # requests per second per second: the slowest creep, for rates of a few a minute
MIN_RATE = 0.1
# With nothing learned yet (auto), a holder sends freely for this long before it asks again: a pause
# recorded meanwhile reaches it within about that long.
FREE_SECONDS = 0.1
# An answer told of later than this after it arrived (its work-horse was paused) backs nothing off.
REPORT_MAX_AGE = 2.0
MAX_RATE = 1_000_000.0

# Both gate families start the same way: Redis' clock (workers on different machines agree on it).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# Lease, renew or (want 0) release a holder's block of in-flight slots.
# KEYS: holders zset (holder -> lease expiry), slots hash, wants hash.
# ARGV: holder, limit (0 = none), want, bound, lease seconds.
# Holders whose lease lapsed (their work-horse died) are dropped first, with their slots.
# `bound` is the most slots the holder may still be using (its cap or more, while a shrink drains): its
# record never drops below it, so the sum of records, which never exceeds the limit, bounds what is in
# flight. Shares are max-min fair over every holder's want (waiting ones included): nobody is granted
# more than the even share of what the others leave while another waits. Returns {grant, fair share}.
UPSTREAM_HOLD = _NOW + """
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
"""

# The pacing scripts read the pace hash (keys.UPSTREAM_PACE) and keep a count of the requests let through in
# the current and the previous second of Redis' clock: the rate being sent, which a throttling answer of an
# upstream with no rate learned yet turns into the first learned rate. Only a holder whose lease is alive
# moves anything: a work-horse paused past its lease (10 s) wakes to find its word no longer counts.
_PACE_STATE = _NOW + """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
local alive = lease and tonumber(lease) > now
local f = redis.call('HMGET', KEYS[2], 'tat', 'paused_until', 'rate', 'ceiling', 'grown_at', 'cut_at',
                     'win', 'cur', 'prev', 'probing')
local tat, paused = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local rate, ceiling = tonumber(f[3]), tonumber(f[4])
local grown_at, cut_at = tonumber(f[5]) or now, tonumber(f[6]) or 0
local sec = math.floor(now)
local win, cur, prev = tonumber(f[7]) or sec, tonumber(f[8]) or 0, tonumber(f[9]) or 0
if sec > win then
  if sec == win + 1 then prev = cur else prev = 0 end
  cur, win = 0, sec
end
local function us(seconds) return math.floor(seconds * 1000000) end
local function sending() return prev * (1 - (now - win)) + cur end
"""

# Take up to `want` send times (tickets) for a holder's requests: the GCRA. A request counts when it is sent:
# the next free send time `tat` moves on by 1/rate per ticket, so the sends of every worker together keep
# 1/rate apart, and tickets are handed out only up to `horizon` seconds ahead (a pause recorded meanwhile
# stops everything within about that long). While a Retry-After pause lasts nothing is handed out.
# KEYS: holders zset, pace hash. ARGV: holder, mode ("fixed" or "auto"), the fixed rate (requests per second
# sent: the cap less its margin), the configured cap (shown), want, horizon seconds, state ttl (ms), tickets
# the holder dropped since its last call (taken but not sent: the count of what is sent leaves them out),
# requests it sent freely since its last call (nothing learned yet).
# Returns {n, microseconds until the first, microseconds between them} (n >= 1), {0, microseconds to wait,
# paused (1) or not (0)}, {-3, microseconds to send freely for} (no rate learned yet) or {-2} (the holder's
# lease lapsed).
UPSTREAM_PACE_TAKE = _PACE_STATE + """
if not alive then return {-2} end
local mode, want, horizon = ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
cur = math.max(0, cur - tonumber(ARGV[8])) + tonumber(ARGV[9])
if mode == 'auto' and rate and paused <= now and tat >= now - 1 / rate and sending() >= rate * 0.9 then
  -- every ticket of the last interval was taken and sent: requests are waiting for the rate, it may grow
  local dt = math.min(math.max(now - grown_at, 0), 1)
  if f[10] == '1' and not (rate > ceiling * """ + str(ABOVE) + """) then
    rate = rate + math.max(""" + str(MIN_STEP) + """, rate * """ + str(PROBE) + """) * dt
  elseif ceiling and rate < ceiling * """ + str(NEAR) + """ then
    rate = math.min(rate * (1 + """ + str(FAST) + """ * dt), ceiling * """ + str(NEAR) + """)
  elseif ceiling and rate > ceiling * """ + str(ABOVE) + """ then
    rate = rate * (1 + """ + str(FAST_ABOVE) + """ * dt)
  else
    rate = rate + math.max(""" + str(MIN_STEP) + """, rate * """ + str(SLOW) + """) * dt
  end
  rate = math.min(rate, """ + str(MAX_RATE) + """)
end
local pace = rate
if mode == 'fixed' then pace = tonumber(ARGV[3]) end
local reply
if paused > now then
  reply = {0, us(paused - now), 1}
elseif not pace then
  reply = {-3, us(""" + str(FREE_SECONDS) + """)}
else
  local interval = 1 / pace
  local first = math.max(tat, now)
  if first - now > horizon then
    reply = {0, us(first - now - horizon), 0}
  else
    local n = math.min(want, math.floor((now + horizon - first) / interval) + 1)
    tat = first + n * interval
    cur = cur + n
    reply = {n, us(first - now), us(interval)}
  end
end
redis.call('HSET', KEYS[2], 'tat', tat, 'grown_at', now, 'win', win, 'cur', cur, 'prev', prev, 'mode', mode,
           'seen_at', now, 'configured', ARGV[4])
if rate and mode == 'auto' then redis.call('HSET', KEYS[2], 'rate', rate) end
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return reply
"""

# A throttling answer (429; 503 with Retry-After) or a clear rise in answer time, told by the holder that
# saw it. A throttling answer pauses every holder's requests until the moment it names (Retry-After, at most
# pause_max; a 429 without one: pause_default) -- counted from when the answer arrived, so a report made
# late by a paused work-horse pauses nobody longer. With a learned rate (auto), a request sent after the last
# back-off backs it off once more: one back-off per round of requests, however many answers tell of it, and
# none for an answer told of REPORT_MAX_AGE or more after it arrived.
# KEYS: holders zset, pace hash, metric counters hash. ARGV: holder, mode, signal ("429", "503" or
# "latency"), seconds since the request was sent, seconds since its answer, Retry-After seconds (-1: none),
# pause_max, pause_default, state ttl (ms), requests the holder sent freely since its last call, 1 if this
# request was sent freely (before a rate was learned). Returns 1 if it paused, + 2 if it backed the rate off.
# A request sent freely backs off only while no rate is learned: holders send freely for up to FREE_SECONDS
# after the first back-off, and their refusals tell of the burst before it, not of the rate learned from it.
UPSTREAM_PACE_REPORT = _PACE_STATE + """
local signal = ARGV[3]
cur = cur + tonumber(ARGV[10])
if signal ~= 'latency' then redis.call('HINCRBY', KEYS[3], 'upstream_throttled|' .. signal, 1) end
if not alive then return 0 end
local retry, changed = tonumber(ARGV[6]), 0
if signal == '429' or (signal ~= 'latency' and retry >= 0) then
  local wait = tonumber(ARGV[8])
  if retry >= 0 then wait = math.min(retry, tonumber(ARGV[7])) end
  local until_ = now - tonumber(ARGV[5]) + wait
  if until_ > paused then
    redis.call('HSET', KEYS[2], 'paused_until', until_, 'tat', math.max(tat, until_))
    changed = 1
  end
end
if ARGV[2] == 'auto' and now - tonumber(ARGV[4]) > cut_at and tonumber(ARGV[5]) <= """ + str(REPORT_MAX_AGE) + """
   and not (rate and ARGV[11] == '1') then
  -- the rate learned, or with none yet the rate being sent; the rate being sent also when it is well below
  -- the one learned (requests did not wait for it) and a second has passed since the last pause (which
  -- empties the count)
  local from = rate or math.max(sending(), 1)
  if rate and paused + 1 < now and sending() > 0 and sending() < rate * 0.8 then from = sending() end
  do
    local factor = """ + str(FIRST_BACK_OFF) + """
    if rate then factor = """ + str(BACK_OFF) + """ end
    local backed = math.max(""" + str(MIN_RATE) + """, from * factor)
    redis.call('HSET', KEYS[2], 'rate', backed, 'ceiling', from, 'cut_at', now, 'grown_at', now,
               'probing', rate and '0' or '1',
               'win', win, 'cur', cur, 'prev', prev)
    if signal == 'latency' then redis.call('HINCRBY', KEYS[3], 'upstream_throttled|latency', 1) end
    changed = changed + 2
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[9])
return changed
"""
