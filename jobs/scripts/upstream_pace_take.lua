-- upstream_pace_take: take up to `want` send times (tickets) for a holder's requests: the GCRA (jobs.pacing). A
-- request counts when it is sent: the next free send time `tat` moves on by 1/rate per ticket, so the sends of
-- every worker together keep 1/rate apart, and tickets are handed out only up to `horizon` seconds ahead (a
-- pause recorded meanwhile stops everything within about that long). While a Retry-After pause lasts nothing
-- is handed out.
-- KEYS[1] = holders zset (keys.UPSTREAM_HOLDERS)
-- KEYS[2] = pace hash (keys.UPSTREAM_PACE)
-- ARGV[1] = holder; ARGV[2] = mode ("fixed" or "auto"); ARGV[3] = the fixed rate (requests per second sent: the
-- cap less its margin); ARGV[4] = the configured cap (shown); ARGV[5] = want; ARGV[6] = horizon seconds;
-- ARGV[7] = state ttl (ms); ARGV[8] = tickets the holder dropped since its last call (taken but not sent: the
-- count of what is sent leaves them out); ARGV[9] = requests it sent freely since its last call (nothing
-- learned yet).
-- include: gate_constants, now, pace_state
-- Returns {n, microseconds until the first, microseconds between them} (n >= 1), {0, microseconds to wait,
-- paused (1) or not (0)}, {-3, microseconds to send freely for} (no rate learned yet) or {-2} (the holder's
-- lease lapsed).
if not alive then return {-2} end
local mode, want, horizon = ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
cur = math.max(0, cur - tonumber(ARGV[8])) + tonumber(ARGV[9])
if mode == 'auto' and rate and paused <= now and tat >= now - 1 / rate and sending() >= rate * 0.9 then
  -- every ticket of the last interval was taken and sent: requests are waiting for the rate, it may grow
  local dt = math.min(math.max(now - grown_at, 0), 1)
  if f[10] == '1' and not (rate > ceiling * ABOVE) then
    rate = rate + math.max(MIN_STEP, rate * PROBE) * dt
  elseif ceiling and rate < ceiling * NEAR then
    rate = math.min(rate * (1 + FAST * dt), ceiling * NEAR)
  elseif ceiling and rate > ceiling * ABOVE then
    rate = rate * (1 + FAST_ABOVE * dt)
  else
    rate = rate + math.max(MIN_STEP, rate * SLOW) * dt
  end
  rate = math.min(rate, MAX_RATE)
end
local pace = rate
if mode == 'fixed' then pace = tonumber(ARGV[3]) end
local reply
if paused > now then
  reply = {0, us(paused - now), 1}
elseif not pace then
  reply = {-3, us(FREE_SECONDS)}
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
