-- Re-queues (or dead-letters, or ends CANCELLED) running jobs whose lock has
-- expired, found through the lease index.
--
-- KEYS: 1 lease index, 2 default queue, 3 default DLQ, then prefixes: 4 job,
--       5 job lock, 6 active set, 7 events stream, 8 queue, 9 DLQ, 10 unique lock.
--       The ids come out of the lease index only while this script runs, so
--       their keys cannot be listed beforehand: the prefixes are KEYS entries
--       instead (with one hash tag, one cluster slot).
-- ARGV: 1 now (epoch ms), 2 limit, 3 now (RFC 3339), 4 default max attempts,
--       5 ready channel
--
-- Returns {{re-queued ids}, {dead-lettered ids}, {cancelled ids}}.
local leases, default_queue, default_dlq = KEYS[1], KEYS[2], KEYS[3]
local now_ms, limit, now_text, default_max = ARGV[1], tonumber(ARGV[2]), ARGV[3], count(ARGV[4], 5)
local job_prefix, lock_prefix, active_prefix, events_prefix = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local queue_prefix, dlq_prefix, unique_prefix, channel = KEYS[8], KEYS[9], KEYS[10], ARGV[5]

local requeued, dead, cancelled = {}, {}, {}
if limit <= 0 then
  return {requeued, dead, cancelled}
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now_ms, 'LIMIT', 0, limit)) do
  local lock_key, job_key = lock_prefix .. id, job_prefix .. id
  local pttl = redis.call('PTTL', lock_key)
  if pttl > 0 then
    -- Still held (renewed elsewhere, or its index entry is behind): fix the score.
    redis.call('ZADD', leases, int_arg(tonumber(now_ms) + pttl), id)
  elseif pttl == -1 then
    -- A lock without expiry never frees itself; look again in a minute.
    redis.call('ZADD', leases, int_arg(tonumber(now_ms) + 60000), id)
  elseif key_type(job_key) ~= 'hash' then
    redis.call('ZREM', leases, id)
  else
    local fields = redis.call('HMGET', job_key, 'status', 'worker_id', 'current_retries', 'max_retries',
      'queue_name', 'dlq_name', 'cancel_requested')
    local status, worker = string.upper(fields[1] or ''), fields[2]
    if status == 'ACTIVE' and fields[7] == '1' then
      -- Its cancel was requested while it ran: it never runs again.
      end_cancelled(job_key, events_prefix .. id, id, unique_prefix)
      cancelled[#cancelled + 1] = id
    elseif status == 'ACTIVE' then
      -- The lost attempt counts, so a job that keeps killing its runner ends in the DLQ.
      local attempt = next_count(fields[3])
      local max = count(fields[4], default_max)
      redis.call('HSET', job_key, 'current_retries', int_arg(attempt))
      if attempt >= max then
        local dlq = usable(full_name(fields[6], dlq_prefix, default_dlq), 'list', default_dlq)
        local reason = 'Worker lost while running the job (attempt ' .. int_arg(attempt) .. ' of ' .. int_arg(max)
          .. '); moved to DLQ.'
        move_to_dlq(job_key, events_prefix .. id, dlq, id, reason, now_text)
        release_unique(job_key, id, unique_prefix)
        dead[#dead + 1] = id
      else
        local queue = usable(full_name(fields[5], queue_prefix, default_queue), 'zset', default_queue)
        redis.call('HSET', job_key, 'status', 'PENDING', 'last_error', 'Recovered after lock expiry or worker crash.',
          'next_scheduled_run_time', now_text)
        redis.call('HDEL', job_key, 'start_time', 'worker_id')
        redis.pcall('ZADD', queue, now_ms, id)
        signal_ready(channel, queue, true)
        requeued[#requeued + 1] = id
      end
    end
    if worker and worker ~= '' then
      redis.pcall('ZREM', active_prefix .. worker, id)
    end
    redis.call('ZREM', leases, id)
  end
end
return {requeued, dead, cancelled}
