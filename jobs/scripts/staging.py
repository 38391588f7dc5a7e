"""The Lua script that stages a refresh's leaves (jobs.refresh.published.stage_leaves): part of jobs.scripts,
which registers it, in a file of its own for size."""

from __future__ import annotations

from jobs import keys
from jobs.scripts.fence import STALE_CHECK

# Stage one or more leaves of a province, each once, with its checkpoint entry, keeping only the records
# whose id no other leaf of the task staged before (ids are unique by contract; a lying upstream may list
# one under two leaves); counters once per call. A leaf's records arrive as one value and are stored as
# one string: a hash field per record cost the server 3.6 against 1.5 us per record (measured), and what
# reads a leaf reads it whole.
# Where a task's ids are kept: an id "at home" in its leaf (its characters 2-7 are the leaf's code, as in
# H110101000123 of 110101: one leaf at most can be an id's home) in the leaf's entry of the home ids hash,
# one string per leaf; any other id in the task id index (id -> leaf). An id is another leaf's when the index
# holds it, or when it is away and its home leaf holds it. While the index is empty, a leaf whose ids are all
# at home is not looked up at all (one pattern pass). Ids of another form (opaque, uuid-shaped) are all
# away: while no leaf of the task keeps ids at home, their homes are not looked for (an HMGET of made-up
# homes cost more than the index itself) and they go to the index as they are, in one HMGET and one HSET
# per chunk with nothing else done per id in Lua. Index lookups go through HMGET in chunks (unpack is
# bounded).
# KEYS: checkpoint set, stats, task id index, conflicts, data leaves hash, data sizes hash, home ids hash,
# the task's owners hash (the fence), total mismatches, then each leaf's data key. ARGV: the province's
# leaves-done and hospitals counters, max examples (of conflicts, and of mismatches), the fence's unit and
# token, then per leaf: code, JSON, 1 if a district, its total mismatch ('' or "total,listed": a stale count
# the client took), n, its n records joined by newlines (compact JSON has none) in id order, and the n ids
# (distinct, in the same order) joined by newlines in one value -- or, when an id holds a newline, -n and
# the ids one value each (none of them then at home; packing a value per id cost the worker more than the
# rest of staging). Returns per leaf {kept, conflicts}, or {-1, -1} if staged already (a re-run writes and
# counts nothing), or 'STALE' when the execution no longer owns the province (nothing written).
STAGE_LEAF = STALE_CHECK + """
if stale(KEYS[8], ARGV[4], ARGV[5], 'stage') then return 'STALE' end
local FIXED = 9
local chunk, limit, pos, out, described, sizes = 2000, tonumber(ARGV[3]), 6, {}, {}, {}
local leaves, districts, kept_all, conflicts_all, examples = 0, 0, 0, 0, nil
local mismatches, mismatch_examples, homes, homes_new, homes_held = 0, nil, {}, {}, nil
local index_empty = redis.call('HLEN', KEYS[3]) == 0
-- Whether any leaf of the task keeps ids at home (read once, when a leaf first has ids away).
local function any_homes()
  if homes_held == nil then homes_held = redis.call('HLEN', KEYS[7]) > 0 end
  return homes_held or #homes_new > 0
end
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
  local _, found = string.gsub('\\n' .. joined, '\\n.' .. string.gsub(leaf, '%W', '%%%0'), '')
  return found == n
end
local function conflict(id, owner, leaf)
  if examples == nil then examples = redis.call('HLEN', KEYS[4]) end
  if examples < limit then examples = examples + redis.call('HSETNX', KEYS[4], id, owner .. ',' .. leaf) end
end
-- Check ids[from..to] of `leaf` against the task's and index them: kept, conflicts (dropped[i] set for each).
-- `homes_too`: the ids came joined (each may be at home) and some leaf of the task keeps ids at home; if not,
-- every id kept goes to the index, at home or not (an id's home is then looked for in the index alone).
local function check_chunk(leaf, ids, from, to, homes_too, dropped, at_home)
  local owners = index_empty and {} or redis.call('HMGET', KEYS[3], unpack(ids, from, to))
  local of = homes_too and homes_of(ids, from, to, leaf) or nil
  local index, kept, conflicts = {}, 0, 0
  for k = 1, to - from + 1 do
    local id, owner, home = ids[from + k - 1], owners[k] or false, of and of[k] or ''
    if owner == false and home ~= leaf and home ~= '' and homes[home]
        and string.find(homes[home], '\\n' .. id .. '\\n', 1, true) then
      owner = home
    end
    if owner == false or owner == leaf then
      kept = kept + 1
      if home == leaf then at_home[#at_home + 1] = id else index[#index + 1] = id; index[#index + 1] = leaf end
    else
      conflicts = conflicts + 1; dropped[from + k - 1] = true; conflict(id, owner, leaf)
    end
  end
  if #index > 0 then redis.call('HSET', KEYS[3], unpack(index)); index_empty = false end
  return kept, conflicts
end
-- Stage the ids of one leaf not staged before: kept, conflicts, and the records to store.
local function stage_ids(leaf, n, ids, framed, whole, records)
  if whole then  -- all at home, nothing in the index: none can be another leaf's
    homes[leaf] = '\\n' .. whole .. '\\n'
    homes_new[#homes_new + 1] = leaf; homes_new[#homes_new + 1] = homes[leaf]
    return n, 0, records
  end
  local kept, conflicts, dropped, at_home, homes_too = 0, 0, {}, {}, framed and any_homes()
  for from = 1, n, chunk do
    local k, c = check_chunk(leaf, ids, from, math.min(from + chunk - 1, n), homes_too, dropped, at_home)
    kept, conflicts = kept + k, conflicts + c
  end
  if #at_home > 0 then
    homes[leaf] = '\\n' .. table.concat(at_home, '\\n') .. '\\n'
    homes_new[#homes_new + 1] = leaf; homes_new[#homes_new + 1] = homes[leaf]
  end
  if conflicts > 0 and kept > 0 then
    local rest, i = {}, 0
    for record in string.gmatch(records, '[^\\n]+') do
      i = i + 1; if not dropped[i] then rest[#rest + 1] = record end
    end
    records = table.concat(rest, '\\n')
  end
  return kept, conflicts, records
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
    whole = index_empty and all_at_home(leaf, n, ARGV[pos + 6]) and ARGV[pos + 6]
    if not whole and n > 0 then
      for id in string.gmatch(ARGV[pos + 6], '[^\\n]+') do ids[#ids + 1] = id end
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
    local kept, conflicts
    kept, conflicts, records = stage_ids(leaf, n, ids, framed, whole, records)
    if kept > 0 then redis.call('SET', KEYS[FIXED + l], records) end
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
  -- the records-written counter (its name is fixed, so callers pass no extra key): one command per call
  redis.call('HINCRBY', '""" + keys.METRIC_COUNTERS + """', 'records_written', kept_all)
end
if conflicts_all > 0 then redis.call('HINCRBY', KEYS[2], 'conflicts', conflicts_all) end
if mismatches > 0 then
  redis.call('HINCRBY', KEYS[2], '""" + keys.TOTAL_MISMATCHES + """', mismatches)
  -- the counter jobs.observe.counters names TOTAL_MISMATCHES (a fixed name, like records_written's)
  redis.call('HINCRBY', '""" + keys.METRIC_COUNTERS + """', 'upstream_total_mismatches', mismatches)
end
return out
"""
