-- Cancels a job: a waiting one is taken off its queue and ended CANCELLED
-- (unique lock released, `cancelled` event), a running one is flagged and
-- its worker signalled on the cancel channel.
--
-- KEYS: 1 job, 2 default queue, 3 events stream, 4 queue prefix, 5 unique-lock
--       prefix (the job's queue and unique lock are named by its fields, read only here)
-- ARGV: 1 job id, 2 cancel channel
--
-- Returns {code, status}: 1 cancelled, 2 cancel requested, 0 not found, 3 not cancellable.
local job_key, default_queue, events, queue_prefix, unique_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = key_type(job_key)
if t == 'none' then
  return {0, false}
elseif t ~= 'hash' then
  return {3, false}
end
local fields = redis.call('HMGET', job_key, 'status', 'queue_name')
local status = fields[1] or false
local upper = string.upper(status or '')
if upper == 'PENDING' or upper == 'RETRYING' then
  redis.pcall('ZREM', full_name(fields[2], queue_prefix, default_queue), ARGV[1])
  end_cancelled(job_key, events, ARGV[1], unique_prefix)
  return {1, status}
elseif upper == 'ACTIVE' then
  redis.call('HSET', job_key, 'cancel_requested', '1')
  -- Tells the worker running it at once; renewal is the fallback.
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return {2, status}
end
return {3, status}
