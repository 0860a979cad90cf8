-- Reserve the right to send one touch: the idempotency ledger and the frequency
-- cap in one atomic step, so two workers can never both send the same touch, and
-- two sequences can never both touch one lead inside the cap.
--
-- KEYS[1] lead hash, KEYS[2] lead's send ledger hash, KEYS[3] suppressed-address key,
-- KEYS[4] lead's enrollments hash
-- ARGV[1] ledger field of the touch, ARGV[2] now (unix seconds)
-- ARGV[3] frequency cap in seconds (0 = off), ARGV[4] '1' if the cap applies
-- ARGV[5] seconds after which a 'sending' entry is taken as a crash mid-request
-- ARGV[6] sequence id, ARGV[7] enrollment generation, ARGV[8] step id
-- Returns {'ok', previous last_touch} | {'busy'} | {'unknown'} | {'done', state}
--       | {'suppressed', reason} | {'capped', until} | {'stale'}
local now = tonumber(ARGV[2])

-- The enrollment must still be waiting for exactly this step: checking it here,
-- atomically with the reservation, is what makes an exit (reply, unsubscribe,
-- disqualification) stop a touch that was already claimed or queued.
local raw = redis.call('HGET', KEYS[4], ARGV[6])
if not raw then
  return {'stale'}
end
local enrollment = cjson.decode(raw)
if enrollment['state'] ~= 'active' or tostring(enrollment['generation']) ~= ARGV[7]
    or enrollment['step'] ~= ARGV[8] then
  return {'stale'}
end

local state = redis.call('HGET', KEYS[2], ARGV[1])
if state then
  local kind, ts = string.match(state, '^(%a+):?([%d%.]*)')
  if kind == 'sending' then
    if now - tonumber(ts) > tonumber(ARGV[5]) then
      -- The worker that reserved it died mid-request: SendGrid may or may not
      -- have the message. Record it for the operator; never resend blindly.
      redis.call('HSET', KEYS[2], ARGV[1], 'unknown:' .. ARGV[2])
      return {'unknown'}
    end
    return {'busy'}
  elseif kind ~= 'retry' then
    return {'done', kind}
  end
end

local suppressed = redis.call('HGET', KEYS[1], 'suppressed')
if not suppressed then
  suppressed = redis.call('GET', KEYS[3])
end
if suppressed then
  return {'suppressed', suppressed}
end

local previous = redis.call('HGET', KEYS[1], 'last_touch') or ''
local cap = tonumber(ARGV[3])
if ARGV[4] == '1' and cap > 0 and previous ~= '' then
  local free_at = tonumber(previous) + cap
  if free_at > now then
    return {'capped', tostring(free_at)}
  end
end

redis.call('HSET', KEYS[2], ARGV[1], 'sending:' .. ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'last_touch', ARGV[2])
end
return {'ok', previous}
