-- upstream_pace_report: a throttling answer (429; 503 with Retry-After) or a clear rise in answer time, told by
-- the holder that saw it (jobs.pacing). A throttling answer pauses every holder's requests until the moment it
-- names (Retry-After, at most pause_max; a 429 without one: pause_default) -- counted from when the answer
-- arrived, so a report made late by a paused work-horse pauses nobody longer. With a learned rate (auto), a
-- request sent after the last back-off backs it off once more: one back-off per round of requests, however
-- many answers tell of it, and none for an answer told of REPORT_MAX_AGE or more after it arrived. A request
-- sent freely backs off only while no rate is learned: holders send freely for up to FREE_SECONDS after the
-- first back-off, and their refusals tell of the burst before it, not of the rate learned from it.
-- KEYS[1] = holders zset (keys.UPSTREAM_HOLDERS)
-- KEYS[2] = pace hash (keys.UPSTREAM_PACE)
-- KEYS[3] = metric counters hash (keys.METRIC_COUNTERS)
-- ARGV[1] = holder; ARGV[2] = mode; ARGV[3] = signal ("429", "503" or "latency"); ARGV[4] = seconds since the
-- request was sent; ARGV[5] = seconds since its answer; ARGV[6] = Retry-After seconds (-1: none);
-- ARGV[7] = pause_max; ARGV[8] = pause_default; ARGV[9] = state ttl (ms); ARGV[10] = requests the holder sent
-- freely since its last call; ARGV[11] = 1 if this request was sent freely (before a rate was learned).
-- include: gate_constants, now, pace_state
-- Returns 1 if it paused, + 2 if it backed the rate off.
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
if ARGV[2] == 'auto' and now - tonumber(ARGV[4]) > cut_at and tonumber(ARGV[5]) <= REPORT_MAX_AGE
   and not (rate and ARGV[11] == '1') then
  -- the rate learned, or with none yet the rate being sent; the rate being sent also when it is well below
  -- the one learned (requests did not wait for it) and a second has passed since the last pause (which
  -- empties the count)
  local from = rate or math.max(sending(), 1)
  if rate and paused + 1 < now and sending() > 0 and sending() < rate * 0.8 then from = sending() end
  do
    local factor = FIRST_BACK_OFF
    if rate then factor = BACK_OFF end
    local backed = math.max(MIN_RATE, from * factor)
    redis.call('HSET', KEYS[2], 'rate', backed, 'ceiling', from, 'cut_at', now, 'grown_at', now,
               'probing', rate and '0' or '1',
               'win', win, 'cur', cur, 'prev', prev)
    if signal == 'latency' then redis.call('HINCRBY', KEYS[3], 'upstream_throttled|latency', 1) end
    changed = changed + 2
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[9])
return changed
