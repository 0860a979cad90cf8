-- Finish one touch: record its outcome in the ledger and move the enrollment to
-- its next step, in one atomic step. The enrollment only moves if it is still
-- waiting for this very touch, so a duplicate or late execution changes nothing.
--
-- A sent touch also records, in the same step, what was sent (the content ids the
-- lead has now received) and the counters, so a crash cannot lose or double them.
--
-- Every key carries the lead's bucket tag {<bucket>} (one cluster slot): the lead's
-- own keys, and the schedule shard, claims, stats and counters of its bucket.
--
-- Keys:
--   <prefix>:{<bucket>}:L:<lead>      hash  the lead: 'e:<seq>' -> packed enrollment (or
--                                           older JSON), 'l:<ledger field>' ->
--                                           '<state>:<unix time>', 'r' -> content ids
--                                           received, ','-joined
--   <prefix>:{<bucket>}:sched         zset  touch id -> due time (the bucket's shard)
--   <prefix>:{<bucket>}:claimed       zset  touch id -> lease expiry
--   <prefix>:{<bucket>}:stats:<seq>   hash  '<step>:<counter>' and the report's day fields -> count
--   <prefix>:{<bucket>}:stats         set   sequence ids with stats in this bucket
--   <prefix>:{<bucket>}:counters      hash  the bucket's share of the global counters
--   <prefix>:{<bucket>}:tl:<lead>     list  the lead's timeline (capped, expiring; a stream
--                                           written by an older version is turned into the list)
-- ARGV[5]: the ledger field '<seq>:<gen>:<step>' (its hash field is 'l:' .. it).
-- ARGV[12..14]: a timeline entry ('' = none), the entries kept and the TTL.
-- ARGV[15..]: the content ids sent.
-- Returns 1 if the enrollment moved, 0 if it had moved on already.
local lead_key = KEYS[1]
local schedule_key = KEYS[2]
local claimed_key = KEYS[3]
local stats_key = KEYS[4]
local stats_index_key = KEYS[5]
local counters_key = KEYS[6]
local timeline_key = KEYS[7]
local sequence_id = ARGV[1]
local generation = ARGV[2]
local step_id = ARGV[3]
local touch = ARGV[4]
local ledger_field = 'l:' .. ARGV[5]
local ledger_state = ARGV[6]     -- '' = leave the ledger as it is
local enrollment_packed = ARGV[7]  -- the enrollment after this touch
local next_touch = ARGV[8]       -- '' = nothing to schedule
local next_due = ARGV[9]
local stats_fields = ARGV[10]    -- newline-separated fields to add 1 to; '' = none
local lateness = ARGV[11]        -- '' = not sent
local timeline_entry = ARGV[12] -- '' = record nothing
local timeline_maxlen = ARGV[13]
local timeline_ttl = ARGV[14]
local first_content = 15

if ledger_state ~= '' then
  redis.call('HSET', lead_key, ledger_field, ledger_state)
end
if stats_fields ~= '' then
  for stats_field in string.gmatch(stats_fields, '[^\n]+') do
    redis.call('HINCRBY', stats_key, stats_field, 1)
  end
  redis.call('SADD', stats_index_key, sequence_id)
end
if lateness ~= '' then
  redis.call('HINCRBYFLOAT', counters_key, 'sent', 1)
  redis.call('HINCRBYFLOAT', counters_key, 'lateness_sum', lateness)
end
if #ARGV >= first_content then
  local received = redis.call('HGET', lead_key, 'r') or ''
  local known = {}
  for id in string.gmatch(received, '[^,]+') do
    known[id] = true
  end
  local added = {}
  for i = first_content, #ARGV do
    if not known[ARGV[i]] then
      known[ARGV[i]] = true
      added[#added + 1] = ARGV[i]
    end
  end
  if #added > 0 then
    if received ~= '' then
      table.insert(added, 1, received)
    end
    redis.call('HSET', lead_key, 'r', table.concat(added, ','))
  end
end
if timeline_entry ~= '' then
  timeline_push(timeline_key, timeline_maxlen, timeline_ttl, timeline_entry)
end
redis.call('ZREM', claimed_key, touch)
redis.call('ZREM', schedule_key, touch)
local raw = redis.call('HGET', lead_key, 'e:' .. sequence_id)
if not raw then
  return 0
end
local enrolled_generation, enrolled_state, enrolled_step = enrollment_head(raw)
if enrolled_state ~= 'active' or enrolled_generation ~= generation
    or enrolled_step ~= step_id then
  return 0
end
redis.call('HSET', lead_key, 'e:' .. sequence_id, enrollment_packed)
if next_touch ~= '' then
  redis.call('ZADD', schedule_key, next_due, next_touch)
end
return 1
