-- Claims up to `max` ready jobs of one queue.
--
-- KEYS: 1 queue, 2 the worker's active set, 3 lease index, 4 paused set, 5 default DLQ,
--       then prefixes: 6 job, 7 job lock, 8 quarantine, 9 events stream, 10 queue,
--       11 unique lock, 12 DLQ. The ids come out of the queue only while this
--       script runs, so their keys cannot be listed beforehand: the prefixes
--       are KEYS entries instead (with one hash tag, one cluster slot).
-- ARGV: 1 worker id, 2 now (epoch ms), 3 max, 4 lease TTL (ms), 5 token (start_time),
--       6 start score (epoch s), 7 lock expiry (epoch ms), 8 now (RFC 3339),
--       9 replay (1 when this call repeats one whose reply was lost), 10 max payload bytes
--
-- Returns {paused (0/1), {id, fields, id, fields, ...}, {dropped ids}, head score or nil}.
-- Dropped: ids whose hash is gone or finished, ids quarantined to the
-- default DLQ (a key of another type, a status nobody writes), and jobs
-- whose cancel was requested (ended CANCELLED, never started), and jobs
-- whose payload is over the limit (moved to their DLQ unrun). A job's hash
-- is read whole only once it is known to be small enough to run.
local queue, active, leases, paused, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, now_ms, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl_ms, token, start_score, lock_expiry = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local job_prefix, lock_prefix, quarantine_prefix, events_prefix = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local queue_prefix, unique_prefix, dlq_prefix = KEYS[10], KEYS[11], KEYS[12]
local now_text, replay, max_payload = ARGV[8], ARGV[9] == '1', tonumber(ARGV[10])

-- `last_error` of a job whose stored status is unknown (long values are not quoted).
local function unknown_status(raw)
  local shown = '"' .. raw .. '"'
  if #raw > 100 then
    shown = 'a ' .. #raw .. '-byte value'
  end
  return 'job field `status` is invalid (' .. shown .. '): not a known job status'
end

if redis.call('SISMEMBER', paused, queue) == 1 then
  return {1, {}, {}, false}
end

local claimed, dropped = {}, {}
local taken = 0
if replay and max > 0 then
  -- The same claim again after its reply was lost: the jobs the lost run took
  -- carry this claim's token (and its start score in the active set). Hand
  -- them out again rather than leave them to orphan recovery.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', active, start_score, start_score)) do
    if taken >= max then
      break
    end
    local job_key = job_prefix .. id
    if holds(job_key, lock_prefix .. id, worker, token)
        and full_name(redis.call('HGET', job_key, 'queue_name'), queue_prefix, queue) == queue then
      taken = taken + 1
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = redis.call('HGETALL', job_key)
    end
  end
end
-- The position of `name`'s value in a flat HGETALL reply, or nil.
local function field_at(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      return i + 1
    end
  end
  return nil
end

-- Runs `cmd key` over `args` in steps that stay far below Lua's unpack limit.
local function each_chunk(cmd, key, args)
  for i = 1, #args, 512 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 511, #args)))
  end
end

-- Members from which a sorted set this script adds to is kept as a skiplist.
local SKIPLIST_AT = 32

-- A member longer than `zset-max-listpack-value` (64 bytes by default): a
-- sorted set that ever held it is a skiplist for good. It is not UTF-8, so
-- no job this script hands out can have it as its id (such ids are
-- dead-lettered above), and removing it never removes a job.
local SKIPLIST_SEED = string.rep('\255', 160)

-- Adds score/member pairs to a sorted set. Redis keeps a sorted set of up
-- to `zset-max-listpack-entries` (128) members as a listpack (a ziplist
-- before Redis 7), where every insert and every removal scans the list:
-- past a few dozen members that costs several times what a skiplist does.
-- On a cluster the active set and lease index are per shard, so they are
-- small, emptied and created again all the time, and a claim often adds
-- dozens of jobs to one of them. A set that is (or would become) a listpack
-- of `SKIPLIST_AT` members or more is therefore made a skiplist first, with
-- the seed member, removed again within this script (no one else ever sees
-- it). On one node these sets hold every running job and are skiplists
-- already. It is an optimisation only: a Redis user not allowed `OBJECT`
-- or `ZCARD` gets no conversion, not a failed claim.
local function add_batch(key, args)
  local adding = #args / 2
  local seeded = false
  if adding > 0 then
    local encoding = redis.pcall('OBJECT', 'ENCODING', key)
    if not encoding then
      seeded = adding >= SKIPLIST_AT
    elseif encoding == 'listpack' or encoding == 'ziplist' then
      local size = redis.pcall('ZCARD', key)
      seeded = type(size) == 'number' and size + adding >= SKIPLIST_AT
    end
  end
  if seeded then
    redis.call('ZADD', key, 0, SKIPLIST_SEED)
  end
  each_chunk('ZADD', key, args)
  if seeded then
    redis.call('ZREM', key, SKIPLIST_SEED)
  end
end

if max > taken then
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now_ms, 'LIMIT', 0, max * 4)
  -- Queue removals and active/lease entries are written once per claim, not per job.
  local removed, in_active, in_leases = {}, {}, {}
  for _, id in ipairs(ids) do
    if taken >= max then
      break
    end
    local job_key = job_prefix .. id
    -- The payload's length first: an error for a non-hash, and no whole
    -- read of a job too large to run.
    local size, small = 0, {}
    if not valid_utf8(id) then
      size = false
    else
      size = redis.pcall('HSTRLEN', job_key, 'job_params')
    end
    if not size then
      -- No JobId can name this id: keep whatever it has for inspection,
      -- with the reason, and take it off the queue (it cannot be listed as
      -- dropped, nor go to a DLQ, without naming it).
      local kept = quarantine_prefix .. id
      if redis.call('EXISTS', job_key) == 1 then
        redis.call('RENAME', job_key, kept)
      end
      redis.pcall('HSET', kept, 'quarantine_reason', 'job id is not valid UTF-8; taken off ' .. queue .. ' at '
        .. now_text)
      removed[#removed + 1] = id
    elseif type(size) ~= 'table' then
      small = redis.call('HMGET', job_key, 'status', 'cancel_requested', 'dlq_name')
      if size == 0 then
        -- A 0.9.9 job carries its payload in job_args / job_kwargs.
        size = redis.call('HSTRLEN', job_key, 'job_args') + redis.call('HSTRLEN', job_key, 'job_kwargs')
      end
    end
    if not size then
      -- Quarantined above.
    elseif type(size) == 'table' then
      -- Keep the foreign value for inspection and fail the job visibly.
      local t = key_type(job_key)
      local kept = quarantine_prefix .. id
      redis.call('RENAME', job_key, kept)
      redis.call('HSET', job_key, 'id', id, 'queue_name', untagged(queue))
      removed[#removed + 1] = id
      move_to_dlq(job_key, events_prefix .. id, dlq, id,
        'job key had type ' .. t .. '; original preserved at ' .. kept, now_text)
      dropped[#dropped + 1] = id
    elseif not small[1] and size == 0 and redis.call('EXISTS', job_key) == 0 then
      removed[#removed + 1] = id
      dropped[#dropped + 1] = id
    else
      local raw = small[1] or ''
      local status = string.upper(string.match(raw, '^%s*(.-)%s*$'))
      if status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED' then
        removed[#removed + 1] = id
        dropped[#dropped + 1] = id
      elseif status ~= '' and status ~= 'PENDING' and status ~= 'RETRYING' and status ~= 'ACTIVE' then
        -- A status no producer or worker writes: fail the job visibly, unrun.
        removed[#removed + 1] = id
        move_to_dlq(job_key, events_prefix .. id, dlq, id, unknown_status(raw), now_text)
        dropped[#dropped + 1] = id
      elseif small[2] == '1' then
        -- A requested cancel is never overridden by a new start.
        removed[#removed + 1] = id
        end_cancelled(job_key, events_prefix .. id, id, unique_prefix)
        dropped[#dropped + 1] = id
      elseif max_payload and size > max_payload then
        -- Never run, so not an attempt (the worker's own check says the same).
        removed[#removed + 1] = id
        local own = usable(full_name(small[3], dlq_prefix, dlq), 'list', dlq)
        move_to_dlq(job_key, events_prefix .. id, own, id, 'Job payload is ' .. int_arg(size)
          .. ' bytes, over max_payload_bytes (' .. ARGV[10] .. '). Moved to DLQ.', now_text)
        dropped[#dropped + 1] = id
      elseif redis.call('SET', lock_prefix .. id, worker, 'NX', 'PX', ttl_ms) then
        removed[#removed + 1] = id
        local fields = redis.call('HGETALL', job_key)
        redis.call('HSET', job_key, 'status', 'ACTIVE', 'start_time', token, 'worker_id', worker)
        -- The reply shows the hash as it is now, as an HGETALL after the HSET would.
        for _, kv in ipairs({{'status', 'ACTIVE'}, {'start_time', token}, {'worker_id', worker}}) do
          local i = field_at(fields, kv[1])
          if i then
            fields[i] = kv[2]
          else
            fields[#fields + 1] = kv[1]
            fields[#fields + 1] = kv[2]
          end
        end
        in_active[#in_active + 1] = start_score
        in_active[#in_active + 1] = id
        in_leases[#in_leases + 1] = lock_expiry
        in_leases[#in_leases + 1] = id
        taken = taken + 1
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = fields
      end
    end
  end
  each_chunk('ZREM', queue, removed)
  add_batch(active, in_active)
  add_batch(leases, in_leases)
end

local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
return {0, claimed, dropped, head[2] or false}
