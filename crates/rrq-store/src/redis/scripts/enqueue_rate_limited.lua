-- Creates a job unless the rate limiter dropped the request (leading edge).
--
-- KEYS: 1 job, 2 queue, 3 rate-limit key
-- ARGV: 1 job id, 2 score (epoch ms), 3 window TTL (whole s, > 0),
--       4 publish a ready signal (1/0), 5 ready channel, 6.. the hash fields
--
-- Returns {status, id}: 1 created, 2 dropped by the limiter, -1 the job id is taken.
local job_key, queue, limiter = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
require_type(queue, 'zset')

-- A re-sent call whose first run created the job answers as that run did.
if redis.call('EXISTS', job_key) == 1 and written_by_this_call(job_key, 6, #ARGV) then
  return {1, id}
end

if not redis.call('SET', limiter, id, 'NX', 'EX', ARGV[3]) then
  return {2, ''}
end
if redis.call('EXISTS', job_key) == 1 then
  redis.call('DEL', limiter)
  return {-1, id}
end
return create_job(job_key, queue, id, ARGV[2], ARGV[4], ARGV[5], 6)
