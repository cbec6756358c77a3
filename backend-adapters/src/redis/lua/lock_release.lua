-- lock_release: give a lock back, only if the caller still owns it.
-- KEYS[1] lock key {name}
-- ARGV[1] owner id
-- Returns: 1 when released, 0 when the lock had expired or belongs to someone else.
-- A holder paused past its lease must not delete the lock a newer holder took.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
