-- The prelude: functions every script shares, prepended to each script by
-- worker/store/scripts.py (Redis scripts cannot call each other). It reads no KEYS
-- and no ARGV of its own; each script's header below it gives those.

-- The enrollment's generation, state and step: from the packed head that
-- worker/store/enrollments.py writes ('<generation>|<a/d/e>|<step>|...'), or from
-- the JSON object older versions wrote.
local function enrollment_head(raw)
  if string.sub(raw, 1, 1) == '{' then
    local e = cjson.decode(raw)
    return tostring(e['generation']), e['state'], e['step']
  end
  local gen, state, step = string.match(raw, '^(%d+)|(%a)|([^|]*)|')
  local states = {a = 'active', d = 'done', e = 'exited'}
  return gen, states[state], step
end

-- A timeline written by an older version is a stream (one JSON entry per stream
-- entry): turn it into the list, its entries kept as they are (the reader in
-- worker/store/timeline.py takes both forms), so an old lead keeps its history.
local function timeline_as_list(timeline_key)
  if redis.call('TYPE', timeline_key)['ok'] == 'stream' then
    local old = redis.call('XRANGE', timeline_key, '-', '+')
    redis.call('DEL', timeline_key)
    for _, item in ipairs(old) do
      redis.call('RPUSH', timeline_key, item[2][2])
    end
  end
end

-- Append entries to a lead's timeline: a capped list that expires a while after its
-- last write (an older version's stream becomes the list first).
local function timeline_push(timeline_key, maxlen, ttl, ...)
  timeline_as_list(timeline_key)
  redis.call('RPUSH', timeline_key, ...)
  redis.call('LTRIM', timeline_key, -tonumber(maxlen), -1)
  redis.call('EXPIRE', timeline_key, ttl)
end
