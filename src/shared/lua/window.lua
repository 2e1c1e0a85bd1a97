-- Fixed-window counter with check-and-add. KEYS[1]: hash {i = window index, c = count}.
-- ARGV: window_ms, amount, limit (-1: none). Returns {allowed, count, reset_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local idx = math.floor(now / w)
local cur = redis.call('HMGET', KEYS[1], 'i', 'c')
local c = 0
if tonumber(cur[1]) == idx then c = tonumber(cur[2]) or 0 end
local reset = (idx + 1) * w - now
if limit >= 0 and c + amount > limit then
  return {0, c, reset}
end
c = c + amount
redis.call('HSET', KEYS[1], 'i', idx, 'c', c)
redis.call('PEXPIRE', KEYS[1], w * 2)
return {1, c, reset}
