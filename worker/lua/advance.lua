-- Finish one touch: record its outcome in the ledger and move the enrollment to
-- its next step, in one atomic step. The enrollment only moves if it is still
-- waiting for this very touch, so a duplicate or late execution changes nothing.
--
-- A sent touch also records, in the same step, what was sent (the content ids the
-- lead has now received) and the counters, so a crash cannot lose or double them.
--
-- KEYS[1] enrollments hash, KEYS[2] ledger hash, KEYS[3] schedule zset,
-- KEYS[4] claimed zset, KEYS[5] the sequence's stats hash, KEYS[6] stats index set,
-- KEYS[7] global counters hash, KEYS[8] the lead's received-content set
-- ARGV[1] sequence id, ARGV[2] generation, ARGV[3] step id, ARGV[4] touch id,
-- ARGV[5] ledger field, ARGV[6] ledger state ('' = leave it),
-- ARGV[7] new enrollment JSON, ARGV[8] next touch id ('' = none), ARGV[9] its due time,
-- ARGV[10] stats field to count ('' = none), ARGV[11] lateness in seconds ('' = none),
-- ARGV[12..] content ids sent
-- Returns 1 if the enrollment moved, 0 if it had moved on already.
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
end
if ARGV[10] ~= '' then
  redis.call('HINCRBY', KEYS[5], ARGV[10], 1)
  redis.call('SADD', KEYS[6], ARGV[1])
end
if ARGV[11] ~= '' then
  redis.call('HINCRBYFLOAT', KEYS[7], 'sent', 1)
  redis.call('HINCRBYFLOAT', KEYS[7], 'lateness_sum', ARGV[11])
end
if #ARGV > 11 then
  redis.call('SADD', KEYS[8], unpack(ARGV, 12))
end
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[4])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local enrollment = cjson.decode(raw)
if enrollment['state'] ~= 'active' or tostring(enrollment['generation']) ~= ARGV[2]
    or enrollment['step'] ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[7])
if ARGV[8] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[9], ARGV[8])
end
return 1
