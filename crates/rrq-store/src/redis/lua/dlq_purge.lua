-- Takes up to ARGV[1] of the oldest ids off a DLQ and deletes their jobs.
--
-- KEYS: 1 DLQ
-- ARGV: 1 most ids to take, 2 job prefix, 3 events prefix
--
-- A job is deleted (hash and events stream) only while its status is still
-- FAILED: an id re-enqueued since it was dead-lettered keeps its new job.
-- Returns how many ids were taken off the list.
local dlq = KEYS[1]
local max = tonumber(ARGV[1]) or 0
local taken = 0
while taken < max do
  local id = redis.call('RPOP', dlq)
  if not id then
    break
  end
  taken = taken + 1
  local job_key = ARGV[2] .. id
  if key_type(job_key) == 'hash' then
    local status = redis.call('HGET', job_key, 'status') or ''
    if string.upper(string.match(status, '^%s*(.-)%s*$')) == 'FAILED' then
      redis.call('DEL', job_key, ARGV[3] .. id)
    end
  end
end
return taken
