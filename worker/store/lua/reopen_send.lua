-- Reopen a failed touch for an operator's retry (nurture retry): only an entry that
-- says 'dead' (certainly not sent) becomes 'retry', so a retry can never send a
-- touch that went out or may have gone out.
--
-- Keys:
--   <prefix>:{<bucket>}:L:<lead>  hash  the lead: 'l:<ledger field>' -> '<state>:<unix time>'
-- ARGV[1]: the ledger field '<seq>:<gen>:<step>' (its hash field is 'l:' .. it).
-- Returns '' when reopened, else the entry that stopped it ('' -> 'none').
local lead_key = KEYS[1]
local ledger_field = 'l:' .. ARGV[1]
local new_state = ARGV[2]      -- 'retry:<now>'

local state = redis.call('HGET', lead_key, ledger_field)
if not state then
  return 'none'
end
if string.sub(state, 1, 5) ~= 'dead:' then
  return state
end
redis.call('HSET', lead_key, ledger_field, new_state)
return ''
