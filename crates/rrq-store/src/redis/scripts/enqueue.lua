-- Creates a job, optionally deduplicated by an idempotency key.
--
-- KEYS: 1 job, 2 queue, 3 job key prefix (the job an idempotency key names
--       is learnt only here), 4 idempotency key (only when one is used)
-- ARGV: 1 job id, 2 score (epoch ms), 3 idempotency TTL (s; <= 0 = no expiry),
--       4 publish a ready signal (1/0), 5 ready channel,
--       6.. the hash fields as name/value pairs
--
-- Returns {status, id}: 1 created (also to a re-sent call whose first run
-- created it), 0 an existing job represents the request,
-- -1 the job id is taken.
local job_key, queue, job_prefix, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
-- Refused before any write: a queue key of another type would fail the ZADD
-- after the job hash was written.
require_type(queue, 'zset')

-- A re-sent call whose first run created the job answers as that run did.
if redis.call('EXISTS', job_key) == 1 and written_by_this_call(job_key, 6, #ARGV) then
  return {1, id}
end
if idem then
  local existing = get_string(idem)
  if existing then
    if redis.call('EXISTS', job_prefix .. existing) == 1 then
      return {0, existing}
    end
    redis.call('DEL', idem)
  end
end
if redis.call('EXISTS', job_key) == 1 then
  return {-1, id}
end
if idem then
  local ttl = tonumber(ARGV[3]) or 0
  local set
  if ttl > 0 then
    set = redis.call('SET', idem, id, 'NX', 'EX', ARGV[3])
  else
    set = redis.call('SET', idem, id, 'NX')
  end
  if not set then
    return {0, redis.call('GET', idem)}
  end
end
return create_job(job_key, queue, id, ARGV[2], ARGV[4], ARGV[5], 6)
