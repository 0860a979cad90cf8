-- Move due touches from the schedule to the claimed set, atomically.
--
-- Several schedulers (threads, processes, hosts) may run this at once: a touch
-- is claimed by exactly one of them because the ZREM happens inside the script.
-- A claim is a lease: if the claimer dies before the touch is queued and done,
-- the lease expires and the touch goes back to the schedule (nothing is lost;
-- the send ledger makes sure nothing is sent twice).
--
-- Touches due at or before ARGV[4] (overdue past the catch-up threshold: a
-- backlog) are returned but not claimed: they stay on the schedule for the
-- scheduler's catch-up to spread, never queued at once.
--
-- Keys (one shard of the schedule: both carry its bucket tag, one cluster slot):
--   <prefix>:{<bucket>}:sched    zset  touch id -> due unix time (the durable schedule)
--   <prefix>:{<bucket>}:claimed  zset  touch id -> lease expiry unix time
-- Args: now, limit (touches looked at), lease expiry, and optionally the latest
--   due time left for the catch-up (none: every due touch is claimed).
-- Returns a flat list: touch id, due, touch id, due, ... (earliest first; those due
-- at or before ARGV[4] left unclaimed).
local schedule_key = KEYS[1]
local claimed_key = KEYS[2]
local now = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_until = ARGV[3]
local late_before = tonumber(ARGV[4])

local expired = redis.call('ZRANGEBYSCORE', claimed_key, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(expired) do
  redis.call('ZREM', claimed_key, member)
  -- NX: if the touch was rescheduled meanwhile, keep that time.
  redis.call('ZADD', schedule_key, 'NX', now, member)
end

local due = redis.call('ZRANGEBYSCORE', schedule_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  if late_before == nil or tonumber(due[i + 1]) > late_before then
    redis.call('ZREM', schedule_key, due[i])
    redis.call('ZADD', claimed_key, lease_until, due[i])
  end
end
return due
