-- Worker health records with their remaining time, for inspection tools
-- (reads only).
--
-- KEYS: the health keys
--
-- Returns one {value or nil, PTTL} per key.
local out = {}
for i, key in ipairs(KEYS) do
  local value = false
  if key_type(key) == 'string' then
    value = redis.call('GET', key)
  end
  out[i] = {value, redis.call('PTTL', key)}
end
return out
