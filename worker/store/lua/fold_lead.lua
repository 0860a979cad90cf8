-- `nurture migrate state`, layout 2 -> 3: fold one lead's four keys into its one hash,
-- in one atomic step (a crash leaves the lead either folded or untouched, never half).
-- Values are kept as they are (the readers take every form older versions wrote).
--
-- Keys (all carry the lead's bucket tag {<bucket>}: one cluster slot):
--   <prefix>:{<bucket>}:L:<lead>     hash  the lead (layout 3): 'd' data, flags,
--                                          'e:<seq>', 'l:<ledger field>', 'r'
--   <prefix>:{<bucket>}:lead:<lead>  hash  layout 2: 'data' and the flags
--   <prefix>:{<bucket>}:enr:<lead>   hash  layout 2: sequence id -> enrollment
--   <prefix>:{<bucket>}:sent:<lead>  hash  layout 2: ledger field -> '<state>:<time>'
--   <prefix>:{<bucket>}:recv:<lead>  set   layout 2: content ids received
-- No ARGV. Returns how many of the four old keys there were (all deleted).
local lead_key = KEYS[1]

local function copy(key, rename)
  local pairs_ = redis.call('HGETALL', key)
  for i = 1, #pairs_, 2 do
    redis.call('HSET', lead_key, rename(pairs_[i]), pairs_[i + 1])
  end
  return #pairs_ > 0
end

local found = 0
if copy(KEYS[2], function(name) if name == 'data' then return 'd' end return name end) then
  found = found + 1
end
if copy(KEYS[3], function(name) return 'e:' .. name end) then
  found = found + 1
end
if copy(KEYS[4], function(name) return 'l:' .. name end) then
  found = found + 1
end
local received = redis.call('SMEMBERS', KEYS[5])
if #received > 0 then
  table.sort(received)
  redis.call('HSET', lead_key, 'r', table.concat(received, ','))
  found = found + 1
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return found
