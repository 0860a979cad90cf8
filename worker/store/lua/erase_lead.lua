-- Erase a lead's personal data in one atomic step: every field of the lead hash but
-- its send ledger (the 'l:' fields: which touches went out, no personal data) goes,
-- with the lead's other personal keys; then the tombstone flags are written.
--
-- Keys (all carry the lead's bucket tag {<bucket>}: one cluster slot):
--   <prefix>:{<bucket>}:L:<lead>    hash  the lead: data, flags, 'e:<seq>' enrollments,
--                                         'l:<seq>:<gen>:<step>' ledger, 'r' received
--   KEYS[2..]: deleted whole (the lead's engagement, variants and timeline)
-- ARGV: the tombstone, flag name, value, name, value... (none: nothing kept but the
-- ledger).
-- Returns the number of lead-hash fields deleted.
local lead_key = KEYS[1]

local gone = {}
for _, name in ipairs(redis.call('HKEYS', lead_key)) do
  if string.sub(name, 1, 2) ~= 'l:' then
    gone[#gone + 1] = name
  end
end
if #gone > 0 then
  redis.call('HDEL', lead_key, unpack(gone))
end
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
if #ARGV > 0 then
  redis.call('HSET', lead_key, unpack(ARGV))
end
return #gone
