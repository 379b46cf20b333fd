-- Fields of many job hashes, for inspection tools (reads only).
--
-- KEYS: the job hashes
--
-- Returns one flat {field, value, ...} array per key; an empty one when the
-- key is missing or is not a hash.
local out = {}
for i, key in ipairs(KEYS) do
  if key_type(key) == 'hash' then
    out[i] = redis.call('HGETALL', key)
  else
    out[i] = {}
  end
end
return out
