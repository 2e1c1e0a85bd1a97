-- Stores the highest announced catalog version and announces it. KEYS[1]: version key.
-- ARGV: version, channel.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v > cur then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return v
