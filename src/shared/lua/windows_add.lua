-- Several fixed-window counters checked and added atomically: all are admitted or none.
-- KEYS[i]: hash {i = window index, c = count}. ARGV: for each key, window_ms, amount (may be
-- negative: a correction, floored at 0), limit (-1: none). Returns {allowed, retry_after_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counts = {}
local wait = 0
for k = 1, #KEYS do
  local w = tonumber(ARGV[3 * k - 2])
  local amount = tonumber(ARGV[3 * k - 1])
  local limit = tonumber(ARGV[3 * k])
  local idx = math.floor(now / w)
  local cur = redis.call('HMGET', KEYS[k], 'i', 'c')
  local c = 0
  if tonumber(cur[1]) == idx then c = tonumber(cur[2]) or 0 end
  counts[k] = {idx, c}
  -- A limit refuses what would pass it, and (for an amount of 0) a counter already at it.
  if limit >= 0 and amount >= 0 and (c + amount > limit or (amount == 0 and c >= limit)) then
    local reset = (idx + 1) * w - now
    if reset > wait then wait = reset end
  end
end
if wait > 0 then return {0, wait} end
for k = 1, #KEYS do
  local w = tonumber(ARGV[3 * k - 2])
  local amount = tonumber(ARGV[3 * k - 1])
  local c = counts[k][2] + amount
  if c < 0 then c = 0 end
  redis.call('HSET', KEYS[k], 'i', counts[k][1], 'c', c)
  redis.call('PEXPIRE', KEYS[k], w * 2)
end
return {1, 0}
