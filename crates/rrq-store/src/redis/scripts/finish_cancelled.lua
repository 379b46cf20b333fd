-- Ends a running job whose cancel was requested (fenced): CANCELLED, the
-- flag cleared, the unique lock released, the `cancelled` event appended.
--
-- KEYS: 1 job, 2 job lock, 3 the worker's active set, 4 lease index, 5 events stream,
--       6 unique-lock prefix (the lock is named by a job field, read only here)
-- ARGV: 1 job id, 2 worker id, 3 token
--
-- Returns 1 when applied (now or by an earlier run of this same call), 0 when stale.
local job_key, lock_key, active, leases, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local unique_prefix = KEYS[6]
local id, worker, token = ARGV[1], ARGV[2], ARGV[3]

local settled = check_fence(job_key, lock_key, active, id, worker, token, 'CANCELLED')
if settled then
  return settled
end

end_cancelled(job_key, events, id, unique_prefix)
end_attempt(lock_key, active, leases, id, worker)
return 1
