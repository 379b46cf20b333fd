-- Puts a claimed job back on the queue it was claimed from, ready now,
-- without counting an attempt (fenced). A job whose cancel was requested
-- while it ran ends CANCELLED instead.
--
-- KEYS: 1 job, 2 job lock, 3 the worker's active set, 4 lease index, 5 queue, 6 events stream,
--       7 unique-lock prefix (the lock is named by a job field, read only here)
-- ARGV: 1 job id, 2 worker id, 3 token, 4 has a reason (1/0), 5 reason, 6 now (epoch ms),
--       7 ready channel
--
-- Returns 1 when applied, 0 when stale.
local job_key, lock_key, active, leases, queue, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local unique_prefix = KEYS[7]
local id, worker, token = ARGV[1], ARGV[2], ARGV[3]

local settled = check_fence(job_key, lock_key, active, id, worker, token)
if settled then
  return settled
end

if cancel_requested(job_key) then
  end_cancelled(job_key, events, id, unique_prefix)
  end_attempt(lock_key, active, leases, id, worker)
  return 1
end
redis.call('HSET', job_key, 'status', 'PENDING')
if ARGV[4] == '1' then
  redis.call('HSET', job_key, 'last_error', ARGV[5])
end
redis.call('HDEL', job_key, 'start_time', 'worker_id')
redis.pcall('ZADD', queue, ARGV[6], id)
end_attempt(lock_key, active, leases, id, worker)
signal_ready(ARGV[7], queue, true)
return 1
