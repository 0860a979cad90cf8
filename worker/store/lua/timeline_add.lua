-- Append entries to one lead's timeline: a capped list of packed entries that
-- expires a while after its last write (see worker/store/timeline.py).
--
-- A timeline written by an older version is a stream: it is turned into the list
-- first, its entries kept as they are (timeline_as_list in lua/prelude.lua).
--
-- Keys:
--   <prefix>:{<bucket>}:tl:<lead>  list  packed entries, oldest first
-- ARGV[1..2]: entries kept, seconds to live; ARGV[3..]: the entries (none: only turn
-- an old stream into the list, as `nurture migrate state` does).
local timeline_key = KEYS[1]
local maxlen = ARGV[1]
local ttl = ARGV[2]
local first_entry = 3

if #ARGV < first_entry then
  timeline_as_list(timeline_key)
  return 0
end
timeline_push(timeline_key, maxlen, ttl, unpack(ARGV, first_entry))
return 1
