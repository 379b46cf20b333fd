-- Helpers shared by RRQ's scripts. This file is prepended to a script's own
-- text before it is hashed and loaded, so every function here is local to
-- the script that uses it.
--
-- Every key a script touches arrives in KEYS: a whole key, or, for a key
-- named by an id the script only learns as it runs (an id popped from a
-- queue, a job field), the key's prefix as a KEYS entry. On Redis Cluster
-- a hash tag in the prefixes keeps every key of a script in one slot. A
-- parameter that takes a key or a prefix is named `key`, `prefix`, `*_key`
-- or `*_prefix` (the check in `lint.rs` relies on it); pub/sub channels are
-- not keys and come in ARGV.

-- The type of a key ('none' when it does not exist).
local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- The value of a string key; false when it is absent or of another type.
-- (`pcall` turns the WRONGTYPE error into a table: one command, no TYPE.)
local function get_string(key)
  local v = redis.pcall('GET', key)
  if type(v) ~= 'string' then
    return false
  end
  return v
end

-- HMGET of a hash; every field false when the key is absent or of another type.
local function hash_fields(key, ...)
  local v = redis.pcall('HMGET', key, ...)
  if v.err then
    return {}
  end
  return v
end

-- A key or prefix without the shard hash tag the sharded layout puts after
-- the namespace (`rrq:{7.3}:queue:x` is the shard's copy of `rrq:queue:x`).
-- Single-layout names have no brace there and come back unchanged.
local function untagged(key)
  local head, rest = string.match(key, '^([^:{]*:)%b{}:(.*)$')
  if head then
    return head .. rest
  end
  return key
end

-- A bare or full name (a job's `queue_name` or `dlq_name`, which always
-- holds the untagged name) turned into its key under `prefix`, trimmed;
-- `fallback_key` when empty. In the single layout the key is the full name.
local function full_name(name, prefix, fallback_key)
  if not name then
    return fallback_key
  end
  name = string.match(name, '^%s*(.-)%s*$')
  if name == '' then
    return fallback_key
  end
  local plain = untagged(prefix)
  if string.sub(name, 1, #plain) == plain then
    name = string.sub(name, #plain + 1)
  end
  return prefix .. name
end

-- Job-supplied numbers are read only through `count` and `seconds`, which
-- bound them before any write: no later command can fail on their value.

-- The most attempts a stored counter or limit may mean (a u32, as the
-- job parser reads them).
local MAX_COUNT = 4294967295

-- The longest job-supplied duration, in seconds: 100 years (the Rust side's
-- MAX_DURATION_SECONDS). EXPIRE refuses values whose milliseconds overflow;
-- this stays far below.
local MAX_SECONDS = 3153600000

-- A stored count in 0..MAX_COUNT, floored; `fallback` when the field is
-- missing, not a number or NaN (tonumber accepts 'inf' and 'nan').
local function count(value, fallback)
  local n = tonumber(value)
  if n == nil or n ~= n then
    return fallback
  end
  return math.min(math.max(math.floor(n), 0), MAX_COUNT)
end

-- The attempt counter after one more attempt (never past MAX_COUNT).
local function next_count(value)
  return math.min(count(value, 0) + 1, MAX_COUNT)
end

-- A stored number of seconds in -MAX_SECONDS..MAX_SECONDS, floored;
-- `fallback` (bounded the same way) when missing, not a number or NaN.
local function seconds(value, fallback)
  local n = tonumber(value)
  if n == nil or n ~= n then
    n = tonumber(fallback) or 0
  end
  return math.min(math.max(math.floor(n), -MAX_SECONDS), MAX_SECONDS)
end

-- `key` when it is absent or of type `want`, else `fallback_key`: a target
-- named by a job field (queue, DLQ) that holds something else is never written.
local function usable(key, want, fallback_key)
  local t = key_type(key)
  if t == 'none' or t == want then
    return key
  end
  return fallback_key
end

-- Refuses, before the script's first write, a key of another type than `want`.
local function require_type(key, want)
  local t = key_type(key)
  if t ~= 'none' and t ~= want then
    error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want})
  end
end

-- Whether `s` is valid UTF-8 (Lua 5.1 has no utf8 library): no stray or
-- overlong sequence, no surrogate, nothing past U+10FFFF. A job id must be,
-- or no `JobId` can name it.
local function valid_utf8(s)
  if not string.find(s, '[\128-\255]') then
    return true
  end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local len, min
      if c >= 0xC2 and c <= 0xDF then
        len, min = 2, 0x80
      elseif c >= 0xE0 and c <= 0xEF then
        len, min = 3, 0x800
      elseif c >= 0xF0 and c <= 0xF4 then
        len, min = 4, 0x10000
      else
        return false
      end
      if i + len - 1 > n then
        return false
      end
      local cp = c % (2 ^ (7 - len))
      for j = i + 1, i + len - 1 do
        local b = string.byte(s, j)
        if b < 0x80 or b > 0xBF then
          return false
        end
        cp = cp * 64 + (b - 0x80)
      end
      if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
        return false
      end
      i = i + len
    end
  end
  return true
end

-- An integer as Redis expects it in an argument (never in exponent form).
local function int_arg(n)
  return string.format('%.0f', n)
end

-- The fence of every outcome write: the job lock is held by `worker` and the
-- hash still records this attempt (`start_time` = token, `worker_id` = worker).
local function holds(job_key, lock_key, worker, token)
  if get_string(lock_key) ~= worker then
    return false
  end
  local cur = hash_fields(job_key, 'start_time', 'worker_id')
  return cur[1] == token and cur[2] == worker
end

-- Whether this attempt already recorded `status`: the script ran before and
-- only its reply was lost, so re-running it must report success again.
local function already_recorded(job_key, worker, token, status)
  local cur = hash_fields(job_key, 'start_time', 'worker_id', 'status')
  return cur[1] == token and cur[2] == worker and cur[3] == status
end

-- A stale lease: nothing is written to the job; the id only leaves this
-- worker's active set, unless the lock shows a newer attempt of this worker.
local function drop_stale(lock_key, active_key, id, worker)
  if get_string(lock_key) ~= worker then
    redis.call('ZREM', active_key, id)
  end
end

-- The head of every fenced write (the twin of `check_fence` in
-- memory/common.rs): nil when the lease holds and the write goes ahead; 1
-- when this attempt already recorded one of the given statuses (the script
-- ran before and only its reply was lost); otherwise 0, the lease stale.
local function check_fence(job_key, lock_key, active_key, id, worker, token, ...)
  if holds(job_key, lock_key, worker, token) then
    return nil
  end
  for _, status in ipairs({...}) do
    if already_recorded(job_key, worker, token, status) then
      return 1
    end
  end
  drop_stale(lock_key, active_key, id, worker)
  return 0
end

-- The end of an attempt: owner-checked lock release, active-set and lease
-- index entries removed.
local function end_attempt(lock_key, active_key, leases_key, id, worker)
  if get_string(lock_key) == worker then
    redis.call('DEL', lock_key)
  end
  redis.call('ZREM', active_key, id)
  redis.call('ZREM', leases_key, id)
end

-- Tells the workers that `queue` (a ready set's key) gained a job. On one
-- server `channel` is the broadcast ready channel, published on only when
-- the job is ready now (keyspace notifications cover the rest). In the
-- sharded layout `channel` is the shard's own channel (its name carries the
-- shard's hash tag, so it hashes to this script's slot) and the message goes
-- out with SPUBLISH, to the shard's nodes only, for a deferred job as well:
-- a worker keeps each shard's head in mind and asks only the shards a
-- message named (see the store's claim).
local function signal_ready(channel, queue, ready_now)
  if string.find(channel, '{', 1, true) then
    redis.call('SPUBLISH', channel, queue)
  elseif ready_now then
    redis.call('PUBLISH', channel, queue)
  end
end

-- Writes a new job's hash from the field pairs at ARGV[first_field..], queues
-- it at `score` and signals `queue` on `channel` (`notify` is '1' when the
-- job is ready now). Returns the enqueue scripts' "created" reply.
local function create_job(job_key, queue, id, score, notify, channel, first_field)
  redis.call('HSET', job_key, unpack(ARGV, first_field))
  redis.call('ZADD', queue, score, id)
  signal_ready(channel, queue, notify == '1')
  return {1, id}
end

-- Whether the job hash at job_key was written by an earlier run of this very
-- call (a client sent it again after a redirection or a lost reply): the
-- call's `enqueue_call` mark, among its fields ARGV[first..last] as
-- name/value pairs, is the job's. Only sharded-layout calls carry a mark.
local function written_by_this_call(job_key, first, last)
  for i = first, last - 1, 2 do
    if ARGV[i] == 'enqueue_call' then
      return redis.call('HGET', job_key, 'enqueue_call') == ARGV[i + 1]
    end
  end
  return false
end

-- Deletes the orchestrator unique lock named `unique` (a job's
-- job_unique_key, possibly empty), only if job `id` holds it.
local function drop_unique(unique, id, unique_prefix)
  if unique and unique ~= '' then
    local key = unique_prefix .. unique
    if get_string(key) == id then
      redis.call('DEL', key)
    end
  end
end

-- Deletes the job's orchestrator unique lock, only if this job holds it.
local function release_unique(job_key, id, unique_prefix)
  drop_unique(redis.call('HGET', job_key, 'job_unique_key'), id, unique_prefix)
end

-- Appends a terminal event to the job's stream (a stream key of another type
-- is left alone rather than failing the whole step).
local function add_event(events_key, id, event, status)
  redis.pcall('XADD', events_key, '*', 'event', event, 'job_id', id, 'status', status)
end

-- Moves a job to a dead letter queue: FAILED, reason, completion time, the
-- `failed` event, LPUSH on the DLQ and the seven-day expiry. Callers pick
-- the DLQ with `usable`; a DLQ key of another type (a misconfigured default)
-- still leaves the job FAILED and expiring rather than failing the script.
local function move_to_dlq(job_key, events_key, dlq_key, id, reason, completion_time)
  redis.call('HSET', job_key, 'status', 'FAILED', 'last_error', reason, 'completion_time', completion_time)
  add_event(events_key, id, 'failed', 'FAILED')
  redis.pcall('LPUSH', dlq_key, id)
  redis.call('EXPIRE', job_key, 604800)
  redis.pcall('EXPIRE', events_key, 604800)
end

-- Ends a job CANCELLED (a requested cancel honoured, or a pending job
-- cancelled): the flag cleared, the unique lock released if this job holds
-- it, and the `cancelled` event appended. No expiry, as the reference's
-- cancel sets none.
local function end_cancelled(job_key, events_key, id, unique_prefix)
  redis.call('HSET', job_key, 'status', 'CANCELLED')
  redis.call('HDEL', job_key, 'cancel_requested')
  release_unique(job_key, id, unique_prefix)
  add_event(events_key, id, 'cancelled', 'CANCELLED')
end

-- Whether a cancel of the job was requested while it ran.
local function cancel_requested(job_key)
  return redis.call('HGET', job_key, 'cancel_requested') == '1'
end

