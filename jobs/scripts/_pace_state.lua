-- Fragment (after `now`): the pacing scripts read the pace hash (KEYS[2]) and keep a count of the requests let
-- through in the current and the previous second of Redis' clock: the rate being sent, which a throttling
-- answer of an upstream with no rate learned yet turns into the first learned rate. Only a holder (ARGV[1])
-- whose lease in KEYS[1] is alive moves anything: a work-horse paused past its lease (10 s) wakes to find its
-- word no longer counts.
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
