-- Extends the locks of running jobs, one answer per lease.
--
-- KEYS: 1 lease index, then per lease: job, job lock
-- ARGV: 1 lease TTL (ms), then one (job id, worker id, token) triple per lease
--
-- Returns one code per lease: 1 held, 2 held with a cancel requested, 0 lost.
local leases, ttl_ms = KEYS[1], tonumber(ARGV[1])
local time = redis.call('TIME')
local expiry = int_arg(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl_ms)

local states = {}
for n = 0, (#ARGV - 1) / 3 - 1 do
  local a, k = 2 + 3 * n, 2 + 2 * n
  local id, worker, token = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local job_key, lock_key = KEYS[k], KEYS[k + 1]
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
