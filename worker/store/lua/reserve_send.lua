-- Reserve the right to send one touch: the idempotency ledger and the frequency
-- cap in one atomic step, so two workers can never both send the same touch, and
-- two sequences can never both touch one lead inside the cap.
--
-- Every key is the lead's (one hash tag: one cluster slot). The address's own
-- suppression lives in another slot: the caller reads it just before and passes it
-- in (ARGV[10]); the lead's 'suppressed' flag, set on every lead of the address
-- after the address's entry, is what this step itself guarantees.
--
-- Keys:
--   <prefix>:{<bucket>}:L:<lead>  hash  the lead: flags (suppressed, last_touch),
--                                      'e:<seq>' -> packed enrollment (or older JSON),
--                                      'l:<ledger field>' -> '<state>:<unix time>'
-- ARGV[1]: the ledger field '<seq>:<gen>:<step>' (its hash field is 'l:' .. it).
-- Returns {'ok', previous last_touch} | {'busy'} | {'unknown'} | {'done', state}
--       | {'suppressed', reason} | {'capped', until} | {'stale'}
local lead_key = KEYS[1]
local ledger_field = 'l:' .. ARGV[1]
local now_text = ARGV[2]
local now = tonumber(now_text)
local cap = tonumber(ARGV[3])            -- frequency cap in seconds (0 = off)
local cap_applies = ARGV[4] == '1'
local stale_after = tonumber(ARGV[5])    -- a 'sending' entry older than this: crash mid-request
local sequence_id = ARGV[6]
local generation = ARGV[7]
local step_id = ARGV[8]
local resend = ARGV[9] == '1'            -- an operator's retry of a failed touch (nurture retry)
local address_suppressed = ARGV[10]      -- why the address is suppressed, '' = it is not

-- The enrollment must still be waiting for exactly this step: checking it here,
-- atomically with the reservation, is what makes an exit (reply, unsubscribe,
-- disqualification) stop a touch that was already claimed or queued.
local raw = redis.call('HGET', lead_key, 'e:' .. sequence_id)
if not raw then
  return {'stale'}
end
local enrolled_generation, enrolled_state, enrolled_step = enrollment_head(raw)
if resend then
  -- The enrollment moved on past the failed step; it must still be the same
  -- enrollment and not have ended by an exit (reply, unsubscribe...).
  if enrolled_state == 'exited' or enrolled_generation ~= generation then
    return {'stale'}
  end
elseif enrolled_state ~= 'active' or enrolled_generation ~= generation
    or enrolled_step ~= step_id then
  return {'stale'}
end

local state = redis.call('HGET', lead_key, ledger_field)
if state then
  local kind, ts = string.match(state, '^(%a+):?([%d%.]*)')
  if kind == 'sending' then
    if now - tonumber(ts) > stale_after then
      -- The worker that reserved it died mid-request: SendGrid may or may not
      -- have the message. Record it for the operator; never resend blindly.
      redis.call('HSET', lead_key, ledger_field, 'unknown:' .. now_text)
      return {'unknown'}
    end
    return {'busy'}
  elseif kind ~= 'retry' then
    return {'done', kind}
  end
end

local suppressed = redis.call('HGET', lead_key, 'suppressed')
if not suppressed and address_suppressed ~= '' then
  suppressed = address_suppressed
end
if suppressed then
  return {'suppressed', suppressed}
end

local previous = redis.call('HGET', lead_key, 'last_touch') or ''
if cap_applies and cap > 0 and previous ~= '' then
  local free_at = tonumber(previous) + cap
  if free_at > now then
    return {'capped', tostring(free_at)}
  end
end

redis.call('HSET', lead_key, ledger_field, 'sending:' .. now_text)
if cap_applies then
  redis.call('HSET', lead_key, 'last_touch', now_text)
end
return {'ok', previous}
