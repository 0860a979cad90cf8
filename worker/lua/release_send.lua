-- Undo a reservation after a failure that certainly did not send (429, 5xx,
-- connection refused, render error): the ledger entry becomes ARGV[2] and the
-- lead's frequency-cap clock goes back to what it was, unless another touch has
-- moved it since.
--
-- KEYS[1] lead hash, KEYS[2] ledger hash
-- ARGV[1] ledger field, ARGV[2] new ledger state, ARGV[3] our reservation time,
-- ARGV[4] previous last_touch ('' for none)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[1], 'last_touch') == ARGV[3] then
  if ARGV[4] == '' then
    redis.call('HDEL', KEYS[1], 'last_touch')
  else
    redis.call('HSET', KEYS[1], 'last_touch', ARGV[4])
  end
end
return 1
