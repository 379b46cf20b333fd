-- Moves a job to its dead letter queue (fenced).
--
-- KEYS: 1 job, 2 job lock, 3 the worker's active set, 4 lease index, 5 events stream,
--       6 default DLQ, 7 DLQ prefix, 8 unique-lock prefix (the job's DLQ and unique
--       lock are named by its fields, read only here)
-- ARGV: 1 job id, 2 worker id, 3 token, 4 reason, 5 count the attempt (1/0),
--       6 completion time
--
-- Returns 1 when applied (now or by an earlier run of this same call), 0 when stale.
local job_key, lock_key, active, leases, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local default_dlq, dlq_prefix, unique_prefix = KEYS[6], KEYS[7], KEYS[8]
local id, worker, token = ARGV[1], ARGV[2], ARGV[3]

local settled = check_fence(job_key, lock_key, active, id, worker, token, 'FAILED')
if settled then
  return settled
end

if ARGV[5] == '1' then
  local retries = next_count(redis.call('HGET', job_key, 'current_retries'))
  redis.call('HSET', job_key, 'current_retries', int_arg(retries))
end
local dlq = usable(full_name(redis.call('HGET', job_key, 'dlq_name'), dlq_prefix, default_dlq), 'list', default_dlq)
move_to_dlq(job_key, events, dlq, id, ARGV[4], ARGV[6])
release_unique(job_key, id, unique_prefix)
end_attempt(lock_key, active, leases, id, worker)
return 1
