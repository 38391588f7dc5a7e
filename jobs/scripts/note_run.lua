-- note_run: record how a schedule's run ended (jobs.named.schedules): count it, and show it if it is still the
-- schedule's latest run (and the schedule exists).
-- KEYS[1] = schedule hash (keys.schedule)
-- KEYS[2] = its runs set (keys.schedule_runs)
-- ARGV[1] = job id; ARGV[2] = status; ARGV[3] = ended at; ARGV[4] = duration; ARGV[5] = error
-- Returns 1 when shown.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], ARGV[2] == 'SUCCEEDED' and 'succeeded' or 'failed', 1)
if redis.call('HGET', KEYS[1], 'last_job_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'last_run_status', ARGV[2], 'last_run_ended_at', ARGV[3], 'last_run_duration', ARGV[4],
           'last_run_error', ARGV[5])
return 1
