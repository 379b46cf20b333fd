-- Removes the given ids from a DLQ and deletes their jobs.
--
-- KEYS: 1 DLQ, then per id: job, events stream
-- ARGV: the job ids (newest first, as listed)
--
-- Each id takes one entry off the list (LREM from the newest end, so a
-- search stops early when the ids come in list order). Only an id that was
-- still in the DLQ has its job deleted (hash and events stream), and only
-- while its status is still FAILED: an id re-enqueued since it was
-- dead-lettered keeps its new job, and an entry that arrived after the ids
-- were read is never touched.
-- Returns how many entries were taken off the list.
local dlq = KEYS[1]
require_type(dlq, 'list')
local taken = 0
for i = 1, #ARGV do
  local id, job_key, events = ARGV[i], KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('LREM', dlq, 1, id) > 0 then
    taken = taken + 1
    if key_type(job_key) == 'hash' then
      local status = redis.call('HGET', job_key, 'status') or ''
      if string.upper(string.match(status, '^%s*(.-)%s*$')) == 'FAILED' then
        redis.call('DEL', job_key, events)
      end
    end
  end
end
return taken
