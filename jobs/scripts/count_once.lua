-- count_once: count a region once (jobs.refresh.walk): add it to a set and, only if it was new, add to counters.
-- KEYS[1] = walked set (keys.task_walked)
-- KEYS[2] = stats hash (keys.task_stats)
-- ARGV[1] = member; ARGV[2..] = field, increment, field, increment, ...
-- Returns 1 when counted.
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
