-- Extends the locks of running jobs, one answer per lease.
--
-- KEYS: 1 lease index
-- ARGV: 1 lease TTL (ms), 2 job key prefix, 3 lock key prefix,
--       then one (job id, worker id, token) triple per lease
--
-- Returns one code per lease: 1 held, 2 held with a cancel requested, 0 lost.
local leases, ttl_ms = KEYS[1], tonumber(ARGV[1])
local job_prefix, lock_prefix = ARGV[2], ARGV[3]
local time = redis.call('TIME')
local expiry = int_arg(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl_ms)

local states = {}
for i = 4, #ARGV, 3 do
  local id, worker, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local job_key, lock_key = job_prefix .. id, lock_prefix .. id
  if holds(job_key, lock_key, worker, token) then
    redis.call('PEXPIRE', lock_key, ARGV[1])
    redis.call('ZADD', leases, expiry, id)
    if redis.call('HGET', job_key, 'cancel_requested') == '1' then
      states[#states + 1] = 2
    else
      states[#states + 1] = 1
    end
  else
    states[#states + 1] = 0
  end
end
return states
