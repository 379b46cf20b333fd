-- Creates a job, or folds the request into the pending job that holds the
-- debounce key (trailing edge).
--
-- KEYS: 1 job, 2 queue, 3 debounce key, 4 job key prefix, 5 queue prefix
--       (the holder's id and old queue are learnt only here)
-- ARGV: 1 job id, 2 score (epoch ms), 3 window TTL (whole s, > 0),
--       4 publish a ready signal (1/0), 5 ready channel,
--       6 has a trace context (1/0), 7 has a correlation context (1/0),
--       8.. the hash fields as name/value pairs
--
-- Returns {status, id}: 1 created, 0 the pending holder was updated (or another
-- holder won the key), -1 the job id is taken.
local job_key, queue, debounce, job_prefix, queue_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
require_type(queue, 'zset')

-- A re-sent call whose first run created the job answers as that run did.
if redis.call('EXISTS', job_key) == 1 and written_by_this_call(job_key, 8, #ARGV) then
  return {1, id}
end

local fields = {}
for i = 8, #ARGV, 2 do
  fields[ARGV[i]] = ARGV[i + 1]
end

local holder = get_string(debounce)
if holder then
  local holder_key = job_prefix .. holder
  if key_type(holder_key) == 'hash' and redis.call('HGET', holder_key, 'status') == 'PENDING' then
    local old_queue = full_name(redis.call('HGET', holder_key, 'queue_name'), queue_prefix, queue)
    for _, name in ipairs({'function_name', 'job_params', 'next_scheduled_run_time', 'max_retries',
      'job_timeout_seconds', 'result_ttl_seconds', 'queue_name'}) do
      redis.call('HSET', holder_key, name, fields[name])
    end
    if ARGV[6] == '1' then
      redis.call('HSET', holder_key, 'trace_context', fields['trace_context'])
    end
    if ARGV[7] == '1' then
      redis.call('HSET', holder_key, 'correlation_context', fields['correlation_context'])
    else
      redis.call('HDEL', holder_key, 'correlation_context')
    end
    if old_queue ~= queue then
      -- Unlike the reference, never leave the job in two queues.
      redis.pcall('ZREM', old_queue, holder)
    end
    redis.call('ZADD', queue, ARGV[2], holder)
    redis.call('EXPIRE', debounce, ARGV[3])
    signal_ready(ARGV[5], queue, ARGV[4] == '1')
    return {0, holder}
  end
end
redis.call('DEL', debounce)
if redis.call('EXISTS', job_key) == 1 then
  return {-1, id}
end
if not redis.call('SET', debounce, id, 'NX', 'EX', ARGV[3]) then
  return {0, redis.call('GET', debounce)}
end
return create_job(job_key, queue, id, ARGV[2], ARGV[4], ARGV[5], 8)
