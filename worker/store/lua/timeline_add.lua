-- Append entries to one lead's timeline: a capped list of packed entries that
-- expires a while after its last write (see worker/store/timeline.py).
--
-- A timeline written by an older version is a stream (one JSON entry per stream
-- entry): it is turned into the list first, its entries kept as they are (the
-- reader takes both forms), so an old lead keeps its history.
--
-- Keys:
--   <prefix>:tl:<lead>  list  packed entries, oldest first
-- ARGV[1..2]: entries kept, seconds to live; ARGV[3..]: the entries (none: only turn
-- an old stream into the list, as `nurture migrate state` does).
local timeline_key = KEYS[1]
local maxlen = tonumber(ARGV[1])
local ttl = ARGV[2]
local first_entry = 3

if redis.call('TYPE', timeline_key)['ok'] == 'stream' then
  local old = redis.call('XRANGE', timeline_key, '-', '+')
  redis.call('DEL', timeline_key)
  for _, item in ipairs(old) do
    redis.call('RPUSH', timeline_key, item[2][2])
  end
end
if #ARGV < first_entry then
  return 0
end
redis.call('RPUSH', timeline_key, unpack(ARGV, first_entry))
redis.call('LTRIM', timeline_key, -maxlen, -1)
redis.call('EXPIRE', timeline_key, ttl)
return 1
