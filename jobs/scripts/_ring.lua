-- Fragment: ring(bell, tokens): a token on a queue's bell (keys.bell; jobs.queues.ring), at most `tokens` kept:
-- jobs given back wake a waiting worker at once.
local function ring(bell, tokens)
  redis.call('RPUSH', bell, 1)
  redis.call('LTRIM', bell, -tonumber(tokens), -1)
end
