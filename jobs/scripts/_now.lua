-- Fragment: `now`, Redis' clock in seconds (workers on different machines agree on it). Included by the gate's
-- scripts and the claims' ones.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
