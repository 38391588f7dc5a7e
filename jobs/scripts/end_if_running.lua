-- end_if_running: overwrite a history record only while it still says RUNNING (a late repair must not undo a
-- real ending; jobs.named.history).
-- KEYS[1] = records hash (keys.history_entries)
-- ARGV[1] = execution id; ARGV[2] = the new record (JSON)
-- Returns 1 when written.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if cjson.decode(raw)['status'] ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
