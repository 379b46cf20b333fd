-- Records the last tick handled for a cron entry; the record never moves back.
--
-- KEYS: 1 the cron tick record (ZSET: entry id -> tick in epoch seconds)
-- ARGV: 1 entry id, 2 tick (epoch seconds)
--
-- Returns 1 when the record moved, 0 when it already held this or a later tick.
local recorded = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if recorded and recorded >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
