-- stage_leaf: stage one or more leaves of a province (jobs.refresh.published.stage_leaves), each once, with its
-- checkpoint entry, keeping only the records whose id no other leaf of the task staged before (ids are unique by
-- contract; a lying upstream may list one under two leaves); counters once per call. A leaf's records arrive as one
-- value and are stored as one string: a hash field per record cost the server 3.6 against 1.5 us per record
-- (measured), and what reads a leaf reads it whole.
--
-- Which ids the task holds: every leaf's kept ids are one string in the leaf ids hash (KEYS[7]). An id "at
-- home" in its leaf (characters 2-7 are the leaf's code, as in H110101000123 of 110101: one leaf at most can
-- be an id's home) needs nothing else: while nothing is in the seen set, a leaf whose ids are all at home is
-- staged with one pattern pass and no per-id work. Every other leaf's ids (opaque ones, all of them) also go
-- to the seen set (KEYS[10]), added in one SADD a chunk: when it adds them all, none was there, and nothing
-- else is done per id (a per-id HMGET and HSET into an id -> leaf index cost the server twice as much,
-- measured). When it adds fewer, the leaf ids hash says which were there and whose (one pass over it), and
-- from then on the task looks before it adds (SMISMEMBER, stats field ids_careful), finding an owner only
-- for the bounded examples. An id away from home is also looked for in its home's string while a leaf kept
-- ids at home only (stats field ids_at_home, settled when the seen set starts: no such leaf comes after).
-- Tasks staged by versions before 2026-12 kept an id -> leaf index (KEYS[3]): read, never written.
--
-- KEYS[1] = the province's checkpoint set (keys.checkpoint_leaves)
-- KEYS[2] = stats hash (keys.task_stats)
-- KEYS[3] = the earlier versions' id index (keys.task_ids)
-- KEYS[4] = conflicts hash (keys.task_conflicts)
-- KEYS[5] = the version's data leaves hash (keys.data_leaves)
-- KEYS[6] = the version's data sizes hash (keys.data_sizes)
-- KEYS[7] = leaf ids hash (keys.task_home_ids)
-- KEYS[8] = the task's owners hash, the fence (keys.task_owners)
-- KEYS[9] = total mismatches hash (keys.task_total_mismatches)
-- KEYS[10] = seen ids set (keys.task_seen_ids)
-- KEYS[11] = metric counters hash (keys.METRIC_COUNTERS)
-- KEYS[12..] = each leaf's data key (keys.data_leaf)
-- ARGV[1] = the province's leaves-done counter field; ARGV[2] = its hospitals counter field; ARGV[3] = max
-- examples (of conflicts, and of mismatches); ARGV[4] = the fence's unit; ARGV[5] = its token; ARGV[6..] = per
-- leaf: code, JSON, 1 if a district, its total mismatch ('' or "total,listed": a stale count the client took),
-- n, its n records joined by newlines (compact JSON has none) in id order, and the n ids (distinct, in the same
-- order) joined by newlines in one value -- or, when an id holds a newline, -n and the ids one value each (none
-- of them then at home; packing a value per id cost the worker more than the rest of staging).
-- include: stale_check, stats_fields
-- Returns per leaf {kept, conflicts}, or {-1, -1} if staged already (a re-run writes and counts nothing), or
-- 'STALE' when the execution no longer owns the province (nothing written).
if stale(KEYS[8], KEYS[11], ARGV[4], ARGV[5], 'stage') then return 'STALE' end
local FIXED = 11
local chunk, limit, pos, out, described, sizes = 2000, tonumber(ARGV[3]), 6, {}, {}, {}
local leaves, districts, kept_all, conflicts_all, examples = 0, 0, 0, 0, nil
local mismatches, mismatch_examples = 0, nil
local homes, homes_new, flags, whole_leaves = {}, {}, nil, 0
local present = redis.call('EXISTS', KEYS[3], KEYS[3], KEYS[10])  -- the id index counts twice: both told apart
local nothing_seen, indexed = present == 0, present >= 2
-- Read once a call, when a leaf is not all at home: {id index, a leaf kept ids at home only, careful}.
local function settings()
  if flags == nil then
    local held = redis.call('HMGET', KEYS[2], 'ids_at_home', 'ids_careful')
    local at_home = held[1] == '1'
    -- Before the seen set starts every leaf string is of such a leaf; an earlier version kept only those.
    if nothing_seen or indexed then at_home = redis.call('HLEN', KEYS[7]) > 0 end
    flags = {indexed, at_home, held[2] == '1'}
  end
  return flags
end
local function any_at_home() return settings()[2] or whole_leaves > 0 end
-- The home of each id of ids[from..to] ('' for none), and one HMGET for the other homes not seen yet.
local function homes_of(ids, from, to, leaf)
  local of, wanted = {}, {}
  for i = from, to do
    local id = ids[i]
    local home = #id >= 7 and string.sub(id, 2, 7) or ''
    of[i - from + 1] = home
    if home ~= '' and home ~= leaf and homes[home] == nil then homes[home] = false; wanted[#wanted + 1] = home end
  end
  if #wanted > 0 then
    local held = redis.call('HMGET', KEYS[7], unpack(wanted))
    for k = 1, #wanted do homes[wanted[k]] = held[k] end
  end
  return of
end
-- True when every one of the n ids joined in `joined` is at home in `leaf`: one pattern pass, no id split.
local function all_at_home(leaf, n, joined)
  if #leaf ~= 6 or n == 0 then return false end
  local _, found = string.gsub('\n' .. joined, '\n.' .. string.gsub(leaf, '%W', '%%%0'), '')
  return found == n
end
-- The leaf other than `leaf` that kept each id of `wanted` (id -> true): one pass over every leaf's ids.
local function owners_of(wanted, leaf)
  local found = {}
  local function look(owner, held)
    if owner ~= leaf and held then
      for id in string.gmatch(held, '[^\n]+') do if wanted[id] then found[id] = owner end end
    end
  end
  for owner, held in pairs(homes) do look(owner, held) end
  local all = redis.call('HGETALL', KEYS[7])
  for i = 1, #all, 2 do if homes[all[i]] == nil then look(all[i], all[i + 1]) end end
  return found
end
local function conflict(id, owner, leaf)
  if examples == nil then examples = redis.call('HLEN', KEYS[4]) end
  if examples < limit then examples = examples + redis.call('HSETNX', KEYS[4], id, owner .. ',' .. leaf) end
end
-- Owners of the ids at `unknown` (positions in ids[from..]) found in the seen set, for the examples only: one
-- pass over every leaf's ids while examples are wanted for ids not yet among them (at most `limit` passes).
local function name_owners(ids, from, unknown, owners, leaf)
  if examples == nil then examples = redis.call('HLEN', KEYS[4]) end
  if examples >= limit or #unknown == 0 then return end
  local wanted, named = {}, redis.call('HMGET', KEYS[4], unpack(unknown, 1, math.min(#unknown, limit)))
  for j = 1, #named do if not named[j] then wanted[unknown[j]] = true end end
  if next(wanted) == nil then return end
  local found = owners_of(wanted, leaf)
  for k, owner in pairs(owners) do
    if owner == '' then owners[k] = found[ids[from + k - 1]] or '?' end
  end
end
-- Add list[i..j] to the seen set; the position in it -> owner ('' unknown) of those another leaf kept before.
local function seen_before(list, i, j, leaf)
  local careful, held = settings()[3], {}
  if nothing_seen then  -- the seen set starts: whether a leaf kept ids at home only is settled for good
    redis.call('HSET', KEYS[2], 'ids_at_home', any_at_home() and 1 or 0); nothing_seen = false
  end
  if careful then
    local present = redis.call('SMISMEMBER', KEYS[10], unpack(list, i, j))
    for k = 1, #present do if present[k] == 1 then held[k] = '' end end
  end
  local added = redis.call('SADD', KEYS[10], unpack(list, i, j))
  if not careful and added < j - i + 1 then  -- some were there: which, and whose; and look first from now on
    local wanted = {}
    for k = i, j do wanted[list[k]] = true end
    local found = owners_of(wanted, leaf)
    for k = i, j do if found[list[k]] then held[k - i + 1] = found[list[k]] end end
    redis.call('HSET', KEYS[2], 'ids_careful', 1); flags[3] = true
  end
  return held
end
-- The ids of an unframed leaf (one holds a newline: no leaf string can hold them) found in the seen set are
-- another leaf's; the others go to the id index (id -> leaf), where every leaf looks from then on.
local function index_unframed(list, i, j, leaf)
  local held, index = {}, {}
  local present = redis.call('SMISMEMBER', KEYS[10], unpack(list, i, j))
  for k = 1, #present do
    if present[k] == 1 then held[k] = '' else index[#index + 1] = list[i + k - 1]; index[#index + 1] = leaf end
  end
  if #index > 0 then redis.call('HSET', KEYS[3], unpack(index)); settings()[1] = true; nothing_seen = false end
  return held
end
-- Check ids[from..to] of `leaf` against the task's: how many another leaf kept (dropped[i] set for each).
local function check_chunk(leaf, ids, from, to, framed, dropped)
  local owners, add = {}, framed and seen_before or index_unframed
  if settings()[1] or not framed then
    local held = redis.call('HMGET', KEYS[3], unpack(ids, from, to))
    for k = 1, #held do if held[k] and held[k] ~= leaf then owners[k] = held[k] end end
  end
  if framed and any_at_home() then
    local of = homes_of(ids, from, to, leaf)
    for k = 1, to - from + 1 do
      local home, id = of[k], ids[from + k - 1]
      if not owners[k] and home ~= leaf and home ~= '' and homes[home]
          and string.find(homes[home], '\n' .. id .. '\n', 1, true) then
        owners[k] = home
      end
    end
  end
  if next(owners) == nil then  -- the usual case: the seen set alone decides, nothing copied
    local held = add(ids, from, to, leaf)
    if next(held) == nil then return 0 end
    for k, owner in pairs(held) do owners[k] = owner end
  else
    local list, at = {}, {}
    for k = 1, to - from + 1 do if not owners[k] then list[#list + 1] = ids[from + k - 1]; at[#list] = k end end
    for j, owner in pairs(#list > 0 and add(list, 1, #list, leaf) or {}) do owners[at[j]] = owner end
  end
  local unknown = {}
  for k, owner in pairs(owners) do if owner == '' then unknown[#unknown + 1] = ids[from + k - 1] end end
  name_owners(ids, from, unknown, owners, leaf)
  local conflicts = 0
  for k = 1, to - from + 1 do
    if owners[k] then
      conflicts = conflicts + 1; dropped[from + k - 1] = true; conflict(ids[from + k - 1], owners[k], leaf)
    end
  end
  return conflicts
end
-- Stage the ids of one leaf not staged before (`joined`: as they came, if in one value): kept, conflicts, and
-- the records to store. Its kept ids become its string in the leaf ids hash.
local function stage_ids(leaf, n, ids, framed, whole, joined, records)
  if whole then whole_leaves = whole_leaves + 1; return n, 0, records, joined end
  local conflicts, dropped = 0, {}
  for from = 1, n, chunk do
    conflicts = conflicts + check_chunk(leaf, ids, from, math.min(from + chunk - 1, n), framed, dropped)
  end
  if conflicts > 0 then
    local kept, rest, i = {}, {}, 0
    for k = 1, n do if not dropped[k] then kept[#kept + 1] = ids[k] end end
    for record in string.gmatch(records, '[^\n]+') do
      i = i + 1; if not dropped[i] then rest[#rest + 1] = record end
    end
    joined, records, n = table.concat(kept, '\n'), table.concat(rest, '\n'), #kept
  end
  return n, conflicts, records, framed and joined or nil
end
local function mismatched(leaf, said)
  mismatches = mismatches + 1
  if mismatch_examples == nil then mismatch_examples = redis.call('HLEN', KEYS[9]) end
  if mismatch_examples < limit then
    mismatch_examples = mismatch_examples + redis.call('HSETNX', KEYS[9], leaf, said)
  end
end
for l = 1, #KEYS - FIXED do
  local leaf, json, district, said = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
  local n, records, ids, framed, whole = tonumber(ARGV[pos + 4]), ARGV[pos + 5], {}, true, false
  if n >= 0 then
    whole = nothing_seen and all_at_home(leaf, n, ARGV[pos + 6]) and ARGV[pos + 6]
    if not whole and n > 0 then
      for id in string.gmatch(ARGV[pos + 6], '[^\n]+') do ids[#ids + 1] = id end
    end
    pos = pos + 7
  else
    n, framed = -n, false
    for i = 1, n do ids[i] = ARGV[pos + 5 + i] end
    pos = pos + 6 + n
  end
  if redis.call('SADD', KEYS[1], leaf) == 0 then
    out[#out + 1] = -1; out[#out + 1] = -1
  else
    local kept, conflicts, joined
    kept, conflicts, records, joined = stage_ids(leaf, n, ids, framed, whole, framed and ARGV[pos - 1] or nil, records)
    if kept > 0 then redis.call('SET', KEYS[FIXED + l], records) end
    if kept > 0 and joined then  -- an unframed leaf's ids are in the id index instead
      homes[leaf] = '\n' .. joined .. '\n'
      homes_new[#homes_new + 1] = leaf; homes_new[#homes_new + 1] = homes[leaf]
    end
    if said ~= '' then mismatched(leaf, said) end
    described[#described + 1] = leaf; described[#described + 1] = json
    sizes[#sizes + 1] = leaf; sizes[#sizes + 1] = kept
    leaves = leaves + 1; if district == '1' then districts = districts + 1 end
    kept_all, conflicts_all = kept_all + kept, conflicts_all + conflicts
    out[#out + 1] = kept; out[#out + 1] = conflicts
  end
end
if leaves == 0 then return out end
if #homes_new > 0 then redis.call('HSET', KEYS[7], unpack(homes_new)) end
redis.call('HSET', KEYS[5], unpack(described))
redis.call('HSET', KEYS[6], unpack(sizes))
redis.call('HINCRBY', KEYS[2], 'leaves_done', leaves)
redis.call('HINCRBY', KEYS[2], ARGV[1], leaves)
if districts > 0 then redis.call('HINCRBY', KEYS[2], 'districts_processed', districts) end
if kept_all > 0 then
  redis.call('HINCRBY', KEYS[2], 'hospitals_found', kept_all)
  redis.call('HINCRBY', KEYS[2], ARGV[2], kept_all)
  -- the records-written counter: one command per call
  redis.call('HINCRBY', KEYS[11], 'records_written', kept_all)
end
if conflicts_all > 0 then redis.call('HINCRBY', KEYS[2], 'conflicts', conflicts_all) end
if mismatches > 0 then
  redis.call('HINCRBY', KEYS[2], TOTAL_MISMATCHES, mismatches)
  -- the counter jobs.observe.counters names TOTAL_MISMATCHES
  redis.call('HINCRBY', KEYS[11], 'upstream_total_mismatches', mismatches)
end
return out
