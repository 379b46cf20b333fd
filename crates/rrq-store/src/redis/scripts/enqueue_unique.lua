-- Creates a job under the orchestrator unique lock. The job is always
-- created (unless its id is taken); a free lock is taken by it, and a lock
-- held with an expiry pushes the job back until that expiry instead.
--
-- KEYS: 1 job, 2 queue, 3 unique lock
-- ARGV: 1 job id, 2 score (epoch ms), 3 lock TTL (s), 4 publish a ready
--       signal (1/0), 5 ready channel, 6 enqueue time (epoch ms),
--       7.. the hash fields as name/value pairs
--
-- Returns {status, id}: 1 created, -1 the job id is taken (nothing written).
local job_key, queue, lock = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
require_type(queue, 'zset')

-- A re-sent call whose first run created the job answers as that run did.
if redis.call('EXISTS', job_key) == 1 and written_by_this_call(job_key, 7, #ARGV) then
  return {1, id}
end

-- An epoch-milliseconds time as the job hash stores it: RFC 3339, UTC,
-- `+00:00`, with three fractional digits only when they are not all zero.
local function timestamp_ms(ms)
  local secs = math.floor(ms / 1000)
  local frac = ms - secs * 1000
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  -- Civil date from a day count (proleptic Gregorian, 400-year eras).
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then
    year = year + 1
  end
  local text = string.format('%04d-%02d-%02dT%02d:%02d:%02d', year, month, day,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
  if frac > 0 then
    text = text .. string.format('.%03d', frac)
  end
  return text .. '+00:00'
end

if redis.call('EXISTS', job_key) == 1 then
  return {-1, id}
end

local score = tonumber(ARGV[2])
local ready = ARGV[4] == '1'
local fields = {}
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end

-- PTTL: -2 no lock, -1 a lock without expiry (not held, as the reference
-- reads it: nothing is taken or deferred), otherwise milliseconds left.
local remaining = redis.call('PTTL', lock)
if remaining == -2 then
  redis.call('SET', lock, id, 'EX', ARGV[3])
elseif remaining > 0 then
  local at = tonumber(ARGV[6]) + remaining
  if at > score then
    score = at
    ready = false
    for i = 1, #fields - 1, 2 do
      if fields[i] == 'next_scheduled_run_time' then
        fields[i + 1] = timestamp_ms(score)
      end
    end
  end
end

redis.call('HSET', job_key, unpack(fields))
redis.call('ZADD', queue, int_arg(score), id)
signal_ready(ARGV[5], queue, ready)
return {1, id}
