-- Creates many standard jobs; a taken id fails only that job.
--
-- KEYS: job and queue key of each job, in pairs
-- ARGV: 1 ready channel, then per job: id, score (epoch ms), ready now (1/0),
--       number of field values n, then n values (names and values alternating)
--
-- Returns one status per job: 1 created (also when an earlier run of this
-- very call, re-sent by the client, created it), -1 the job id is taken. Each queue
-- that received a job gets one signal (see `signal_ready`).
local statuses, ready = {}, {}
-- Every queue is checked before the first write: a queue key of another
-- type would fail its ZADD after job hashes were written.
for k = 2, #KEYS, 2 do
  require_type(KEYS[k], 'zset')
end
-- Queue entries, written with one ZADD per queue after the loop.
local members, queues = {}, {}
local a = 2
for k = 1, #KEYS, 2 do
  local job_key, queue = KEYS[k], KEYS[k + 1]
  local id, score, now, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local first = a + 4
  a = first + n
  if redis.call('EXISTS', job_key) == 1 then
    -- Created already by an earlier run of this very call (re-sent), or taken.
    statuses[#statuses + 1] = written_by_this_call(job_key, first, first + n - 1) and 1 or -1
  else
    redis.call('HSET', job_key, unpack(ARGV, first, first + n - 1))
    if not members[queue] then
      members[queue] = {}
      queues[#queues + 1] = queue
    end
    local m = members[queue]
    m[#m + 1] = score
    m[#m + 1] = id
    statuses[#statuses + 1] = 1
    ready[queue] = ready[queue] or now == '1'
  end
end
for _, queue in ipairs(queues) do
  local m = members[queue]
  for i = 1, #m, 512 do
    redis.call('ZADD', queue, unpack(m, i, math.min(i + 511, #m)))
  end
end
for _, queue in ipairs(queues) do
  signal_ready(ARGV[1], queue, ready[queue])
end
return statuses
