-- Records the success of one attempt (fenced).
--
-- KEYS: 1 job, 2 job lock, 3 the worker's active set, 4 lease index, 5 events stream
-- ARGV: 1 job id, 2 worker id, 3 token, 4 result JSON, 5 completion time,
--       6 default result TTL (s), 7 unique-lock prefix
--
-- Returns 1 when applied (now or by an earlier run of this same call), 0 when stale.
local job_key, lock_key, active, leases, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, worker, token = ARGV[1], ARGV[2], ARGV[3]

if not holds(job_key, lock_key, worker, token) then
  if already_recorded(job_key, worker, token, 'COMPLETED') then
    return 1
  end
  drop_stale(lock_key, active, id, worker)
  return 0
end

redis.call('HSET', job_key, 'result', ARGV[4], 'completion_time', ARGV[5], 'status', 'COMPLETED')
add_event(events, id, 'completed', 'COMPLETED')
local ttl = count(redis.call('HGET', job_key, 'result_ttl_seconds'), count(ARGV[6], 86400))
if ttl > 0 then
  redis.call('EXPIRE', job_key, int_arg(ttl))
  redis.pcall('EXPIRE', events, int_arg(ttl))
elseif ttl == 0 then
  redis.call('PERSIST', job_key)
  redis.pcall('PERSIST', events)
end
release_unique(job_key, id, ARGV[7])
end_attempt(lock_key, active, leases, id, worker)
return 1
