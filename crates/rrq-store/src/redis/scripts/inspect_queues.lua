-- Sizes and score ranges of queues, for inspection tools (reads only).
--
-- KEYS: the queues
--
-- Returns one {length, lowest score or nil, highest score or nil} per queue.
local out = {}
for i, key in ipairs(KEYS) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  out[i] = {redis.call('ZCARD', key), first[2] or false, last[2] or false}
end
return out
