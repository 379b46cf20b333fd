-- Counts a failed attempt and schedules the next one on the job's own queue
-- (fenced). A job whose cancel was requested while it ran ends CANCELLED
-- instead of being scheduled again.
--
-- KEYS: 1 job, 2 job lock, 3 the worker's active set, 4 lease index, 5 events stream,
--       6 default queue, 7 queue prefix, 8 unique-lock prefix (the job's queue and
--       unique lock are named by its fields, read only here)
-- ARGV: 1 job id, 2 worker id, 3 token, 4 error message, 5 ready time (epoch ms),
--       6 ready time (RFC 3339, ms precision), 7 now (epoch ms), 8 ready channel
--
-- Returns 1 when applied (now or by an earlier run of this same call), 0 when stale.
local job_key, lock_key, active, leases, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local default_queue, queue_prefix, unique_prefix = KEYS[6], KEYS[7], KEYS[8]
local id, worker, token = ARGV[1], ARGV[2], ARGV[3]

local settled = check_fence(job_key, lock_key, active, id, worker, token, 'RETRYING', 'CANCELLED')
if settled then
  return settled
end

local retries = next_count(redis.call('HGET', job_key, 'current_retries'))
if cancel_requested(job_key) then
  redis.call('HSET', job_key, 'current_retries', int_arg(retries), 'last_error', ARGV[4])
  end_cancelled(job_key, events, id, unique_prefix)
  end_attempt(lock_key, active, leases, id, worker)
  return 1
end
local queue = full_name(redis.call('HGET', job_key, 'queue_name'), queue_prefix, default_queue)
queue = usable(queue, 'zset', default_queue)
redis.call('HSET', job_key, 'current_retries', int_arg(retries), 'status', 'RETRYING', 'last_error', ARGV[4],
  'next_scheduled_run_time', ARGV[6])
redis.pcall('ZADD', queue, ARGV[5], id)
end_attempt(lock_key, active, leases, id, worker)
signal_ready(ARGV[8], queue, tonumber(ARGV[5]) <= tonumber(ARGV[7]))
return 1
