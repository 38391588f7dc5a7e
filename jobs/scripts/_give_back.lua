-- Fragment: give_back(): every claim of worker ARGV[1] back to the front of its queue, in order, each queue that
-- got one rung (needs: ring), and the worker off the claimers zset KEYS[1]. KEYS[2..] per queue, three: the
-- worker's claims list, the queue, its bell; ARGV[2] = bell tokens kept. Returns how many jobs went back.
local function give_back()
  local n = 0
  for i = 2, #KEYS, 3 do
    local moved = 0
    while redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'RIGHT', 'LEFT') do moved = moved + 1 end
    if moved > 0 then ring(KEYS[i + 2], ARGV[2]) end
    n = n + moved
  end
  redis.call('ZREM', KEYS[1], ARGV[1])
  return n
end
