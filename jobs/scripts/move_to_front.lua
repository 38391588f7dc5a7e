-- move_to_front: move a job id from anywhere in a queue's list to its head, if it is still there (not yet
-- dequeued); with a second id still queued (jobs.duties.make_room), right behind that one instead.
-- KEYS[1] = the queue's list (RQ's Queue.key)
-- ARGV[1] = job id; ARGV[2] = id to go behind (optional)
-- Returns 1 when moved.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[2] and ARGV[2] ~= '' and redis.call('LINSERT', KEYS[1], 'AFTER', ARGV[2], ARGV[1]) > 0 then return 1 end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
