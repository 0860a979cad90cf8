-- Move due touches from the schedule to the claimed set, atomically.
--
-- Several schedulers (threads, processes, hosts) may run this at once: a touch
-- is claimed by exactly one of them because the ZREM happens inside the script.
-- A claim is a lease: if the claimer dies before the touch is queued and done,
-- the lease expires and the touch goes back to the schedule (nothing is lost;
-- the send ledger makes sure nothing is sent twice).
--
-- KEYS[1] schedule zset (member -> due unix time)
-- KEYS[2] claimed zset  (member -> lease expiry unix time)
-- ARGV[1] now, ARGV[2] max touches, ARGV[3] lease expiry for new claims
-- Returns a flat list: member, due, member, due, ...
local now = ARGV[1]
local limit = tonumber(ARGV[2])

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[2], member)
  -- NX: if the touch was rescheduled meanwhile, keep that time.
  redis.call('ZADD', KEYS[1], 'NX', now, member)
end

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('ZADD', KEYS[2], ARGV[3], due[i])
end
return due
