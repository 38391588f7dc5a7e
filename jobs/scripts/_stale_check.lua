-- Fragment: fencing (jobs.refresh.fence). A job execution owns a unit of a task's work ("plan", or a province's
-- code) while the task's owners hash (keys.task_owners) maps the unit to its token. Every script that writes for
-- an execution takes that hash and the metric counters hash (keys.METRIC_COUNTERS) as keys and the unit and
-- token as arguments, and starts with `stale`: a refused write is counted under `stale_writes|<write>` and
-- changes nothing. An empty token is a write made by no execution (an operator's cancel, the sweeper burying a
-- job): it is not fenced.
-- stale(owners, counters, unit, token, write): true (and counted) when `token` no longer owns `unit`.
local function stale(owners, counters, unit, token, write)
  if token == '' or redis.call('HGET', owners, unit) == token then return false end
  redis.call('HINCRBY', counters, 'stale_writes|' .. write, 1)
  return true
end
