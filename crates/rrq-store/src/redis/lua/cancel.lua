-- Cancels a job: a waiting one is taken off its queue, a running one is flagged.
--
-- KEYS: 1 job, 2 default queue
-- ARGV: 1 job id, 2 queue prefix, 3 cancel channel
--
-- Returns {code, status}: 1 cancelled, 2 cancel requested, 0 not found, 3 not cancellable.
local job_key, default_queue = KEYS[1], KEYS[2]
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
  redis.call('ZREM', full_name(fields[2], ARGV[2], default_queue), ARGV[1])
  redis.call('HSET', job_key, 'status', 'CANCELLED')
  return {1, status}
elseif upper == 'ACTIVE' then
  redis.call('HSET', job_key, 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[3], ARGV[1])
  return {2, status}
end
return {3, status}
