-- Sets a fixed-window counter to a starting value unless it exists already.
-- KEYS[1]: hash {i, c}. ARGV: window_ms, value. Returns 1 when set, 0 when it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'i', math.floor(now / w), 'c', tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], w * 2)
return 1
