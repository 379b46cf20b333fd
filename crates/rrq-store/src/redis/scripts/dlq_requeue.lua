-- Moves a failed job from a DLQ back to a queue with a fresh attempt budget;
-- a cancel requested during an earlier attempt does not follow it.
--
-- KEYS: 1 DLQ, 2 target queue, 3 job
-- ARGV: 1 job id, 2 now (epoch ms), 3 now (RFC 3339), 4 ready channel
--
-- Returns 1 when re-queued, 0 when the id was not in the DLQ or its job is gone
-- (a dangling id is removed from the DLQ).
local dlq, queue, job_key = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
require_type(dlq, 'list')
require_type(queue, 'zset')
if key_type(job_key) ~= 'hash' then
  redis.call('LREM', dlq, 1, id)
  return 0
end
if redis.call('LREM', dlq, 1, id) == 0 then
  return 0
end
redis.call('HSET', job_key, 'status', 'PENDING', 'queue_name', untagged(queue), 'current_retries', '0',
  'next_scheduled_run_time', ARGV[3])
redis.call('HDEL', job_key, 'completion_time', 'cancel_requested')
redis.call('PERSIST', job_key)
redis.call('ZADD', queue, ARGV[2], id)
signal_ready(ARGV[4], queue, true)
return 1
