-- Undo a reservation after a failure that certainly did not send (429, 5xx,
-- connection refused, render error): the ledger entry becomes the new state and
-- the lead's frequency-cap clock goes back to what it was, unless another touch
-- has moved it since. Only our own reservation is undone: when it outlived the send
-- timeout, another worker has already recorded the touch as outcome-unknown and
-- moved the enrollment on, and that decision stands.
--
-- Keys:
--   <prefix>:{<bucket>}:L:<lead>  hash  the lead: flags (last_touch: the cap's clock),
--                                      'l:<ledger field>' -> '<state>:<unix time>'
-- ARGV[1]: the ledger field '<seq>:<gen>:<step>' (its hash field is 'l:' .. it).
-- Returns 1, or 0 when the entry is no longer our reservation (nothing changed).
local lead_key = KEYS[1]
local ledger_field = 'l:' .. ARGV[1]
local new_state = ARGV[2]
local reserved_at = ARGV[3]
local previous_touch = ARGV[4]  -- '' when the lead had none

if redis.call('HGET', lead_key, ledger_field) ~= 'sending:' .. reserved_at then
  return 0
end
redis.call('HSET', lead_key, ledger_field, new_state)
if redis.call('HGET', lead_key, 'last_touch') == reserved_at then
  if previous_touch == '' then
    redis.call('HDEL', lead_key, 'last_touch')
  else
    redis.call('HSET', lead_key, 'last_touch', previous_touch)
  end
end
return 1
