-- Fragment: run_ended(record, stats, id, to, now, o): what ending a refresh run records (jobs.observe.run_ended
-- says what, and gives the keys and numbers). `record` and `stats` are the task's record and stats hash; `o` holds
-- the observe keys: counters (keys.METRIC_COUNTERS), runtime (keys.run_seconds of the kind), hour
-- (keys.metric_hour of `now`'s hour), total (keys.METRIC_TOTALS), runs (keys.run_list of the kind), outcomes
-- (keys.OUTCOMES); and its numbers: hour_ttl, bounds (the histogram's, a comma list), length (of the run list).
local function bucket_of(seconds, bounds)
  for bound in string.gmatch(bounds, '[^,]+') do
    if seconds <= tonumber(bound) then return bound end
  end
  return '+Inf'
end
local function add_sums(key, to, run, wait, records)
  redis.call('HINCRBY', key, 'ended|' .. to, 1)
  if run then
    redis.call('HINCRBYFLOAT', key, 'run_sum|' .. to, run)
    redis.call('HINCRBY', key, 'run_n|' .. to, 1)
    redis.call('HINCRBYFLOAT', key, 'wait_sum', wait)
    redis.call('HINCRBY', key, 'wait_n', 1)
  end
  redis.call('HINCRBY', key, 'hospitals', records)
end
local function subject_of(kind, provinces)
  if kind ~= 'province' then return kind end
  local ok, list = pcall(cjson.decode, provinces or '[]')
  if ok and type(list) == 'table' and list[1] and list[1].code then return 'province:' .. list[1].code end
  return 'province:?'
end
local function run_ended(record, stats, id, to, now, o)
  local r = redis.call('HMGET', record, 'kind', 'run_started_ts', 'queue_wait_seconds', 'run_hospitals_start',
                       'provinces', 'error_message')
  local kind = r[1] or 'full'
  local found = tonumber(redis.call('HGET', stats, 'hospitals_found') or '0')
  local records = math.max(0, found - tonumber(r[4] or '0'))
  local run, wait = false, false
  if r[2] then run, wait = math.max(0, now - tonumber(r[2])), tonumber(r[3] or '0') end
  redis.call('HINCRBY', o.counters, 'tasks_ended|' .. kind .. '|' .. to, 1)
  local summary = {task_id = id, status = to, ended_ts = now, records = records}
  if run then
    redis.call('HINCRBY', o.runtime, bucket_of(run, o.bounds), 1)
    redis.call('HINCRBYFLOAT', o.runtime, 'sum', run)
    redis.call('HINCRBY', o.runtime, 'count', 1)
    summary.run_seconds, summary.queue_wait_seconds = run, wait
  end
  add_sums(o.hour, to, run, wait, records)
  redis.call('EXPIRE', o.hour, o.hour_ttl)
  add_sums(o.total, to, run, wait, records)
  redis.call('LPUSH', o.runs, cjson.encode(summary))
  redis.call('LTRIM', o.runs, 0, tonumber(o.length) - 1)
  if to == 'CANCELLED' then return end
  local outcome = {status = to, task_id = id, ended_ts = now, error = string.sub(r[6] or '', 1, 500)}
  redis.call('HSET', o.outcomes, subject_of(kind, r[5]), cjson.encode(outcome))
  if kind == 'full' and to == 'SUCCEEDED' then
    local all = redis.call('HGETALL', o.outcomes)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 9) == 'province:' and cjson.decode(all[i + 1]).status == 'FAILED' then
        redis.call('HSET', o.outcomes, all[i], cjson.encode({status = to, task_id = id, ended_ts = now, error = ''}))
      end
    end
  end
end
