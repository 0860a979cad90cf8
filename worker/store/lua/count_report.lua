-- Count a provider's report on one touch (SendGrid's delivered, open, click, bounce...)
-- and put it on the lead's timeline, in one atomic step, so the report's day counters
-- and the lead's records never disagree.
--
-- The day fields are added only the first time this report is seen for this touch:
-- the lead's engagement hash keeps a marker field (HSETNX), so a second open of the
-- same email adds to the running total but not to the touches "opened".
--
-- Keys:
-- Every key carries the lead's bucket tag {<bucket>} (one cluster slot).
--   <prefix>:{<bucket>}:stats:<seq>  hash  '<step>:<counter>' and day fields -> count
--   <prefix>:{<bucket>}:stats        set   sequence ids with stats in this bucket
--   <prefix>:{<bucket>}:eng:<lead>   hash  engagement facts and report markers -> first time
--   <prefix>:{<bucket>}:tl:<lead>    list  the lead's timeline (capped, expiring)
-- ARGV[7..]: the day fields to add to.
-- Returns 1 if the day fields were added, 0 if not (already counted, or none).
local stats_key = KEYS[1]
local stats_index_key = KEYS[2]
local engagement_key = KEYS[3]
local timeline_key = KEYS[4]
local sequence_id = ARGV[1]
local counter_field = ARGV[2]   -- '' = no running total
local once_field = ARGV[3]      -- '' = add the day fields every time
local timeline_entry = ARGV[4]  -- '' = record nothing
local timeline_maxlen = ARGV[5]
local timeline_ttl = ARGV[6]
local first_day = 7

redis.call('SADD', stats_index_key, sequence_id)
if counter_field ~= '' then
  redis.call('HINCRBY', stats_key, counter_field, 1)
end
if timeline_entry ~= '' then
  timeline_push(timeline_key, timeline_maxlen, timeline_ttl, timeline_entry)
end
if #ARGV < first_day then
  return 0
end
if once_field ~= '' and redis.call('HSETNX', engagement_key, once_field, '1') == 0 then
  return 0
end
for i = first_day, #ARGV do
  redis.call('HINCRBY', stats_key, ARGV[i], 1)
end
return 1
