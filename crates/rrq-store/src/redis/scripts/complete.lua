-- Records the success of one or more attempts, each fenced on its own lease.
--
-- KEYS: 1 lease index, 2 unique-lock prefix (the lock's name is a job field,
--       read only here), then per attempt: job, job lock, the worker's active set,
--       events stream
-- ARGV: per attempt: job id, worker id, token, result JSON, completion time,
--       default result TTL (s), events stream TTL (ms)
--
-- Returns one code per attempt: 1 applied (now or by an earlier run of this
-- same call), 0 stale.
local leases, unique_prefix = KEYS[1], KEYS[2]

local codes = {}
-- Active-set and lease-index removals, written once per call.
local from_active, from_leases, active_keys = {}, {}, {}
local function leave_active(active, id)
  if not from_active[active] then
    from_active[active] = {}
    active_keys[#active_keys + 1] = active
  end
  local ids = from_active[active]
  ids[#ids + 1] = id
end

for j = 0, (#KEYS - 2) / 4 - 1 do
  local k, a = 3 + 4 * j, 1 + 7 * j
  local job_key, lock_key, active, events = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, worker, token = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local lock = get_string(lock_key)
  -- The fence (start_time, worker_id), the replay check (status) and what
  -- success needs (TTL, unique key) in one read.
  local cur = hash_fields(job_key, 'start_time', 'worker_id', 'status', 'result_ttl_seconds', 'job_unique_key')
  local mine = cur[1] == token and cur[2] == worker
  if lock == worker and mine then
    -- Bounded before the first write: EXPIRE cannot refuse it.
    local ttl = seconds(cur[4], seconds(ARGV[a + 5], 86400))
    redis.call('HSET', job_key, 'result', ARGV[a + 3], 'completion_time', ARGV[a + 4], 'status', 'COMPLETED')
    add_event(events, id, 'completed', 'COMPLETED')
    if ttl > 0 then
      redis.call('EXPIRE', job_key, int_arg(ttl))
    elseif ttl == 0 then
      redis.call('PERSIST', job_key)
    end
    -- The stream only wakes waiters (they start at `$`): keep it briefly,
    -- never longer than the result.
    local events_ms = tonumber(ARGV[a + 6])
    if ttl > 0 and ttl * 1000 < events_ms then
      events_ms = ttl * 1000
    end
    redis.pcall('PEXPIRE', events, int_arg(events_ms))
    drop_unique(cur[5], id, unique_prefix)
    -- The lock was read above: it is this worker's.
    redis.call('DEL', lock_key)
    leave_active(active, id)
    from_leases[#from_leases + 1] = id
    codes[#codes + 1] = 1
  elseif mine and cur[3] == 'COMPLETED' then
    codes[#codes + 1] = 1
  else
    -- Stale: nothing is written to the job; the id only leaves this worker's
    -- active set, unless the lock shows a newer attempt of this worker.
    if lock ~= worker then
      leave_active(active, id)
    end
    codes[#codes + 1] = 0
  end
end

local function remove(key, ids)
  for i = 1, #ids, 512 do
    redis.call('ZREM', key, unpack(ids, i, math.min(i + 511, #ids)))
  end
end
for _, active in ipairs(active_keys) do
  remove(active, from_active[active])
end
remove(leases, from_leases)
return codes
