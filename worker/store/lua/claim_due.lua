-- Move due touches from the schedule to the claimed set, atomically.
--
-- Several schedulers (threads, processes, hosts) may run this at once: a touch
-- is claimed by exactly one of them because the ZREM happens inside the script.
-- A claim is a lease: if the claimer dies before the touch is queued and done,
-- the lease expires and the touch goes back to the schedule (nothing is lost;
-- the send ledger makes sure nothing is sent twice).
--
-- Keys (one shard of the schedule: both carry its bucket tag, one cluster slot):
--   <prefix>:{<bucket>}:sched    zset  touch id -> due unix time (the durable schedule)
--   <prefix>:{<bucket>}:claimed  zset  touch id -> lease expiry unix time
-- Returns a flat list: touch id, due, touch id, due, ...
local schedule_key = KEYS[1]
local claimed_key = KEYS[2]
local now = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_until = ARGV[3]

local expired = redis.call('ZRANGEBYSCORE', claimed_key, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(expired) do
  redis.call('ZREM', claimed_key, member)
  -- NX: if the touch was rescheduled meanwhile, keep that time.
  redis.call('ZADD', schedule_key, 'NX', now, member)
end

local due = redis.call('ZRANGEBYSCORE', schedule_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  redis.call('ZREM', schedule_key, due[i])
  redis.call('ZADD', claimed_key, lease_until, due[i])
end
return due
